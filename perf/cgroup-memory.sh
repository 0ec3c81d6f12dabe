# Broker memory including the page cache it uses, from a memory cgroup of its own (sourced by
# perf/compare).
#
# Why: VmHWM (RSS) counts shardlog's batch cache, which lives in the process, but not the
# kernel page cache that Kafka reads and writes through, which is Kafka's equivalent cache.
# A memory cgroup charges both anonymous memory and the page cache a process faults in or
# writes, so its peak is the like-for-like footprint of each broker.
#
# Needs root and a cgroup v1 memory controller or cgroup v2 with the memory controller; where
# neither can be used, every function is a no-op and the figure is reported as absent.
#
#   cgmem_enter NAME PID   creates a fresh cgroup NAME, moves PID (all its threads) into it,
#                          charges included (v1: move_charge_at_immigrate)
#   cgmem_peak_kib         peak usage of that cgroup since cgmem_enter (KiB), or "null"
#   cgmem_leave            moves nothing back (the process is gone by then); removes the cgroup

cgmem_dir=
cgmem_version=

cgmem_parent= # sets cgmem_parent and cgmem_version; fails where no memory cgroup is usable
cgmem_find_parent() {
  local self
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    grep -qw memory /sys/fs/cgroup/cgroup.controllers || return 1
    self=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
    cgmem_version=2
    cgmem_parent=/sys/fs/cgroup${self}
  elif [[ -d /sys/fs/cgroup/memory ]]; then
    self=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
    cgmem_version=1
    cgmem_parent=/sys/fs/cgroup/memory${self}
  else
    return 1
  fi
}

cgmem_enter() { # name pid
  local parent
  cgmem_dir=
  cgmem_find_parent || return 0
  parent=$cgmem_parent
  mkdir -p "$parent/$1" 2> /dev/null || return 0
  if [[ $cgmem_version == 1 ]]; then
    echo 3 > "$parent/$1/memory.move_charge_at_immigrate" 2> /dev/null || true
  fi
  echo "$2" > "$parent/$1/cgroup.procs" 2> /dev/null || { rmdir "$parent/$1" 2> /dev/null; return 0; }
  cgmem_dir=$parent/$1
  # Peak from now on: charges moved in count, earlier peaks of the parent do not.
  if [[ $cgmem_version == 1 ]]; then
    echo 0 > "$cgmem_dir/memory.max_usage_in_bytes" 2> /dev/null || true
  fi
}

cgmem_peak_kib() {
  local f
  [[ -n "$cgmem_dir" ]] || { echo null; return; }
  if [[ $cgmem_version == 1 ]]; then f=$cgmem_dir/memory.max_usage_in_bytes; else f=$cgmem_dir/memory.peak; fi
  [[ -r "$f" ]] || { echo null; return; }
  echo $(($(cat "$f") / 1024))
}

cgmem_leave() {
  [[ -n "$cgmem_dir" ]] || return 0
  local parent=${cgmem_dir%/*}
  # Anything still inside (a straggling child) goes back to the parent so the dir can go.
  if [[ -r "$cgmem_dir/cgroup.procs" ]]; then
    while read -r p; do echo "$p" > "$parent/cgroup.procs" 2> /dev/null || true; done < "$cgmem_dir/cgroup.procs"
  fi
  rmdir "$cgmem_dir" 2> /dev/null || true
  cgmem_dir=
}
