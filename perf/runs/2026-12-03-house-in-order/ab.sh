#!/usr/bin/env bash
# Alternating before/after perf/compare --quick --no-kafka runs.
set -u
cd /work/main
out=/work/tmp/ab; mkdir -p $out
for rep in 1 2 3; do
  if ((rep % 2)); then order="before after"; else order="after before"; fi
  for which in $order; do
    SHARDLOG=/work/tmp/bin/shardlog-$which QUICK_DURATION=8 QUICK_WARMUP=2 \
      perf/compare --quick --no-kafka --no-limits --workloads "max-rate acks-all" \
      --out $out/$which-$rep > $out/$which-$rep.log 2>&1
    echo "$which-$rep exit $?"
  done
done
