#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: a
# figure that does not move with the machine's noise (CPU time per request
# varies by ±0.5 µs from run to run on 2 cores), for comparing two builds or
# two configurations of the same build. Kernel time is not counted.
#
#   bench/instructions.sh [-d SECONDS] NAME=CONFIG...
#   e.g. bench/instructions.sh off=bench/portcullis.yaml all=/tmp/all.yaml
#
# Each config must listen on 127.0.0.1:18080 and proxy to the origin on
# 127.0.0.1:18001 (like bench/portcullis.yaml); the origin's second port,
# 18002, answers 200 to anything (an OTLP/HTTP collector stand-in). The
# gateway runs under valgrind; wrk (-c16) warms it up for 2 s, then
# instrumentation is switched on for SECONDS (default 4) of load. Needs
# valgrind, nginx and wrk (installed from Debian when missing).
set -euo pipefail
SECS=4
while getopts "d:" o; do case $o in d) SECS=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { sed -n '2,15p' "$0"; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v valgrind >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "bench: needs valgrind: sudo apt-get install valgrind" >&2; exit 2; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
CONNS=16
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
for spec in "$@"; do
  name=${spec%%=*}; config=${spec#*=}
  out=$W/cg.$name.out
  valgrind --tool=callgrind --callgrind-out-file="$out" --instr-atstart=no \
    "$BIN" run -c "$config" >"$W/cg.$name.log" 2>&1 & vp=$!
  up=""
  for _ in $(seq 300); do curl -s -o /dev/null "http://$PROXY/" && { up=1; break; }; sleep 0.2; done
  [ -n "$up" ] || { echo "bench: $name did not answer on $PROXY" >&2; cat "$W/cg.$name.log" >&2; kill "$vp"; exit 1; }
  wrk -t1 -c"$CONNS" -d2s "http://$PROXY/" >/dev/null
  callgrind_control -i on "$vp" >/dev/null 2>&1
  load=$(wrk -t1 -c"$CONNS" -d"${SECS}s" "http://$PROXY/")
  callgrind_control -i off "$vp" >/dev/null 2>&1
  kill "$vp"; wait "$vp" 2>/dev/null || true
  n=$(awk '/requests in/ { print $1 }' <<<"$load")
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  printf "%-10s requests=%-7s instructions_per_request=%s\n" "$name" "$n" "$((total / n))"
done
