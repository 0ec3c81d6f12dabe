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
# The broker must be started inside its cgroup (memory is charged where it is first touched,
# and moving a running JVM leaves its heap charged to the old group), so this shell joins the
# cgroup just for the broker's start and leaves it before the load generator starts:
#
#   cgmem_create NAME     a fresh cgroup NAME below this shell's own
#   cgmem_join_self       moves this shell in (children started now are charged there)
#   cgmem_return_self     moves this shell back to its parent cgroup
#   cgmem_peak_kib        peak usage of the cgroup (KiB), or "null"
#   cgmem_leave           moves stragglers back to the parent and removes the cgroup

cgmem_dir=
cgmem_version=
cgmem_parent= # set by cgmem_find_parent with cgmem_version; fails where none is usable

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

cgmem_create() { # name
  cgmem_dir=
  cgmem_find_parent || return 0
  mkdir -p "$cgmem_parent/$1" 2> /dev/null || return 0
  [[ -w "$cgmem_parent/$1/cgroup.procs" ]] || { rmdir "$cgmem_parent/$1" 2> /dev/null; return 0; }
  cgmem_dir=$cgmem_parent/$1
}

cgmem_join_self() {
  [[ -n "$cgmem_dir" ]] || return 0
  echo "$BASHPID" > "$cgmem_dir/cgroup.procs" 2> /dev/null || cgmem_dir=
}

cgmem_return_self() {
  [[ -n "$cgmem_parent" ]] || return 0
  echo "$BASHPID" > "$cgmem_parent/cgroup.procs" 2> /dev/null || true
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
  if [[ -r "$cgmem_dir/cgroup.procs" ]]; then
    while read -r p; do echo "$p" > "$cgmem_parent/cgroup.procs" 2> /dev/null || true; done < "$cgmem_dir/cgroup.procs"
  fi
  rmdir "$cgmem_dir" 2> /dev/null || true
  cgmem_dir=
}
