#!/usr/bin/env bash
# What observability costs per request: Portcullis proxying with everything
# off, then with metrics, with the JSON access log (to a file), with tracing
# at 1% sampling (OTLP/HTTP to a live collector stand-in), and with all three
# on, against the same origin under the same load; nginx as the reference.
#
#   bench/observability.sh [-d SECONDS] [-c CONNECTIONS] [-r ROUNDS]
#
# Same layout and method as bench/run.sh (proxy alone on CPU 0; origin, the
# collector stand-in and wrk on CPU 1; CPU time per request of the proxy
# process only; median of the rounds). The goal: all on costs under 10% more
# CPU per request than all off.
set -euo pipefail
SECS=10; CONNS=64; ROUNDS=3
while getopts "d:c:r:" o; do case $o in d) SECS=$OPTARG;; c) CONNS=$OPTARG;; r) ROUNDS=$OPTARG;; *) exit 2;; esac; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# The origin's second port answers 200 to anything, so it stands in for an
# OTLP/HTTP collector (the exporter only needs a 2xx).
config() {
  cat "$ROOT/bench/portcullis.yaml"
  case $1 in
    off) ;;
    metrics) printf 'admin: { address: 127.0.0.1:19901 }\n' ;;
    log) printf 'observability:\n  metrics: { enabled: false }\n  access_log: { output: %s/access.log }\n' "$W" ;;
    trace) printf 'observability:\n  metrics: { enabled: false }\n  tracing: { endpoint: "http://127.0.0.1:18002", sample_ratio: 0.01 }\n' ;;
    all) printf 'admin: { address: 127.0.0.1:19901 }\nobservability:\n  access_log: { output: %s/access.log }\n  tracing: { endpoint: "http://127.0.0.1:18002", sample_ratio: 0.01 }\n' "$W" ;;
  esac
}
for k in off metrics log trace all; do config "$k" > "$W/obs-$k.yaml"; done

declare -A R
KINDS=(off metrics log trace all)
for r in $(seq "$ROUNDS"); do
  R[nginx]+="$(measure nginx nginx -c "$W/nginx.conf")|"
  for k in "${KINDS[@]}"; do
    # Start each run with no dirty log pages left from the last one: their
    # writeback would otherwise land on the next configuration's run.
    rm -f "$W/access.log"; sync
    R[$k]+="$(measure "$k" "$BIN" run -c "$W/obs-$k.yaml")|"
  done
  echo "round $r done" >&2
done
echo "load: wrk -t1 -c$CONNS -d${SECS}s, proxies on CPU 0 with one worker, origin, collector and wrk on CPU 1; median of $ROUNDS rounds"
declare -A CPU
for k in nginx "${KINDS[@]}"; do
  IFS='|' read -r -a rounds <<<"${R[$k]}"
  read -r rps p50 p99 cpu bad <<<"$(median "${rounds[@]}")"
  CPU[$k]=$cpu
  printf "%-8s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s\n" "$k" "$rps" "$p50" "$p99" "$cpu" "$bad"
done
awk -v off="${CPU[off]}" -v m="${CPU[metrics]}" -v l="${CPU[log]}" -v t="${CPU[trace]}" -v a="${CPU[all]}" 'BEGIN {
  printf "overhead vs all off: metrics=%+.1f%% access_log=%+.1f%% tracing(1%%)=%+.1f%% all=%+.1f%% (goal: all < +10%%)\n",
    (m / off - 1) * 100, (l / off - 1) * 100, (t / off - 1) * 100, (a / off - 1) * 100 }'
