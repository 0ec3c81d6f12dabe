#!/usr/bin/env bash
# Runs the standard workloads against a broker and compares them.
#   perf/run-standard.sh OUT_DIR [BOOTSTRAP] [DURATION_S] [WARMUP_S]
# The broker must already run at BOOTSTRAP (default 127.0.0.1:9092). LOAD is the load command
# (default: `shardlog load`; before main.rs wires it: target/release/examples/load load).
# CLIENT_ARGS adds flags to every run (e.g. "--cores 1 --first-cpu 1").
set -euo pipefail
out=${1:?OUT_DIR}
bootstrap=${2:-127.0.0.1:9092}
duration=${3:-10}
warmup=${4:-2}
load=${LOAD:-shardlog load}
hist=${HIST:-shardlog hist}
client_args=${CLIENT_ARGS:-}
dir=$(cd "$(dirname "$0")" && pwd)/workloads
mkdir -p "$out"
run() {
  local name=$1; shift
  echo "== $name" >&2
  # shellcheck disable=SC2086
  $load --bootstrap "$bootstrap" --workload "$dir/$name.toml" --out "$out/$name/RUN.json" \
    --duration "$duration" --warmup "$warmup" $client_args "$@"
}
run max-rate
run half-rate --max-from "$out/max-rate/RUN.json"
run acks-all
run partitions-100
run producers-1000
# shellcheck disable=SC2086
$hist compare "$out"/{max-rate,half-rate,acks-all,partitions-100,producers-1000}/RUN.json \
  --svg "$out/publish.svg" | tee "$out/compare.txt"
# shellcheck disable=SC2086
$hist compare "$out"/{max-rate,half-rate,acks-all,partitions-100,producers-1000}/RUN.json \
  --metric e2e --svg "$out/e2e.svg" > /dev/null
