#!/usr/bin/env bash
# Scenarios for kcat (librdkafka's command-line client, the Debian package). Called as
# `scenarios.sh SCENARIO BOOTSTRAP TAG [ARGS...]`: exit 0 passed, 2 kcat lacks it (first line
# says why), 1 failed. The shared cross-client format and the size limits are those of
# tests/clients/python/common.py.
set -uo pipefail

UNSUPPORTED=2
MAX_MESSAGE_BYTES=65536
XC_COUNT=20
scenario=${1:?scenario}
if [ "$scenario" = version ]; then
  kcat -V 2>&1 | sed -n 's/^Version \([^ ]*\) .*librdkafka \([^ ]*\).*/\1 (librdkafka \2)/p' | head -1
  exit 0
fi
B=${2:?bootstrap}
TAG=${3:?tag}
shift 3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

fail() { echo "FAIL: $*"; exit 1; }
unsupported() { echo "$*"; exit $UNSUPPORTED; }
P() { kcat -P -b "$B" -q "$@"; }
# Reads partition 0 of a topic from the beginning to its end.
C() { kcat -C -b "$B" -q -e -o beginning -p 0 "$@"; }

# produce/consume with keys, null keys (-Z: an empty key is sent as NULL) and headers.
produce_consume() {
  local codec=$1
  local t="t-$TAG-pc-$codec" z=()
  [ "$codec" = none ] || z=(-z "$codec")
  printf 'k0:value-0\nk1:value-1\n' | P -t "$t" -p 0 -K: -H hk=hv0 -H hk2=x "${z[@]}" || fail "produce"
  printf ':value-2\n:value-3\n' | P -t "$t" -p 0 -K: -Z "${z[@]}" || fail "produce null keys"
  local got want
  got=$(C -t "$t" -Z -f '%k|%s|%h\n') || fail "consume"
  want=$'k0|value-0|hk=hv0,hk2=x\nk1|value-1|hk=hv0,hk2=x\nNULL|value-2|\nNULL|value-3|'
  [ "$got" = "$want" ] || fail "consumed $(printf %q "$got"), expected $(printf %q "$want")"
}

case "$scenario" in
  create_topic)
    unsupported "kcat has no admin commands (CreateTopics); topics come from auto-creation" ;;
  produce_consume) produce_consume none ;;
  gzip | snappy | lz4 | zstd) produce_consume "$scenario" ;;
  group)
    # kcat's -G is a balanced consumer without an assignment view: this checks join, consume,
    # commit on close and resume from the committed offset (one member; rebalances are
    # checked with the same librdkafka in the confluent-kafka row).
    t="t-$TAG-group" g="g-$TAG"
    printf 'a\nb\nc\nd\n' | P -t "$t" -p 0 || fail "produce"
    got=$(kcat -b "$B" -q -G "$g" -e -f '%s\n' -X auto.offset.reset=earliest "$t") || fail "first member"
    [ "$(echo "$got" | sort | tr -d '\n')" = abcd ] || fail "first member read $(printf %q "$got")"
    printf 'e\n' | P -t "$t" -p 0 || fail "produce"
    got=$(kcat -b "$B" -q -G "$g" -e -f '%s\n' -X auto.offset.reset=earliest "$t") || fail "second member"
    [ "$got" = e ] || fail "second member read $(printf %q "$got"), expected only e (resume at the commit)"
    ;;
  list_offsets)
    t="t-$TAG-offsets"
    for v in a b c; do printf '%s\n' "$v" | P -t "$t" -p 0 || fail "produce"; sleep 0.05; done
    mapfile -t ts < <(C -t "$t" -f '%T\n')
    [ ${#ts[@]} -eq 3 ] || fail "read ${#ts[@]} timestamps"
    q() { kcat -Q -b "$B" -t "$t:0:$1" | sed -n 's/.*offset \(-\{0,1\}[0-9]*\).*/\1/p'; }
    [ "$(q -2)" = 0 ] || fail "earliest: $(q -2)"
    [ "$(q -1)" = 3 ] || fail "latest: $(q -1)"
    [ "$(q "${ts[1]}")" = 1 ] || fail "offset for the 2nd record's timestamp: $(q "${ts[1]}")"
    ;;
  idempotent)
    t="t-$TAG-idem"
    seq 1 50 | P -t "$t" -p 0 -X enable.idempotence=true || fail "produce"
    got=$(C -t "$t" -f '%s\n')
    [ "$got" = "$(seq 1 50)" ] || fail "consumed $(echo "$got" | wc -l) lines, expected 1..50"
    ;;
  max_under | max_over)
    if [ "$scenario" = max_under ]; then size=$((MAX_MESSAGE_BYTES - 512)); else size=$((MAX_MESSAGE_BYTES + 512)); fi
    t="t-$TAG-max-$size"
    head -c "$size" /dev/zero | tr '\0' m >"$TMP/msg"
    # A file argument is sent as one message.
    kcat -P -b "$B" -t "$t" -p 0 -k k -X message.max.bytes=1000000 "$TMP/msg" 2>"$TMP/err"
    rc=$?
    if [ "$scenario" = max_over ]; then
      [ $rc -ne 0 ] || fail "$size-byte message accepted, expected MESSAGE_TOO_LARGE"
      grep -qi "too large" "$TMP/err" || fail "error was: $(cat "$TMP/err")"
    else
      [ $rc -eq 0 ] || fail "$size-byte message rejected: $(cat "$TMP/err")"
      [ "$(C -t "$t" -f '%S\n')" = "$size" ] || fail "the large message did not come back"
    fi
    ;;
  xproduce)
    unsupported "kcat takes header values from the command line (no NUL bytes) and puts the same headers on every message of a run" ;;
  xconsume)
    # Keys and value lengths of every message (header values with NUL bytes do not survive
    # kcat's text output).
    for p in "$@"; do
      got=$(C -t "xc-$p" -Z -f '%k|%S\n')
      want=$(for ((i = 0; i < XC_COUNT; i++)); do
        if ((i % 5 == 4)); then k=NULL; else k="key-$i"; fi
        echo "$k|$(( ${#p} + ${#i} + 2 + 9 + 3 + 7 * i ))"
      done)
      [ "$got" = "$want" ] || fail "xc-$p: got $(echo "$got" | tr '\n' ' '), expected $(echo "$want" | tr '\n' ' ')"
    done
    ;;
  *) unsupported "no scenario $scenario for this client" ;;
esac
echo ok
