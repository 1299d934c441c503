#!/usr/bin/env bash
# What rate limiting costs per request: Portcullis proxying plainly, with a
# local `rate_limit` and with a Redis `rate_limit` (a limit high enough never
# to refuse: the cost of counting), against the same origin under the same
# load, plus nginx as the reference.
#
#   bench/ratelimit.sh [-d SECONDS] [-c CONNECTIONS] [-r ROUNDS]
#
# Same layout and method as bench/run.sh (proxy alone on CPU 0, origin, wrk
# and redis-server on CPU 1; CPU time per request of the proxy process only,
# so Redis's own CPU is not counted; median of the rounds).
set -euo pipefail
SECS=10; CONNS=64; ROUNDS=3
while getopts "d:c:r:" o; do case $o in d) SECS=$OPTARG;; c) CONNS=$OPTARG;; r) ROUNDS=$OPTARG;; *) exit 2;; esac; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "bench: installing redis-server" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
taskset -c 1 redis-server --port 18379 --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & RPID=$!
trap 'kill $RPID 2>/dev/null; cleanup' EXIT
for _ in $(seq 50); do redis-cli -p 18379 ping >/dev/null 2>&1 && break; sleep 0.1; done

declare -a NG PC LO RE
for r in $(seq "$ROUNDS"); do
  NG+=("$(measure nginx nginx -c "$W/nginx.conf")")
  PC+=("$(measure portcullis "$BIN" run -c "$ROOT/bench/portcullis.yaml")")
  LO+=("$(measure local "$BIN" run -c "$ROOT/bench/portcullis-ratelimit-local.yaml")")
  RE+=("$(measure redis "$BIN" run -c "$ROOT/bench/portcullis-ratelimit-redis.yaml")")
  echo "round $r: nginx [${NG[-1]}] plain [${PC[-1]}] local [${LO[-1]}] redis [${RE[-1]}]" >&2
done
read -r n_rps n_p50 n_p99 n_cpu n_bad <<<"$(median "${NG[@]}")"
read -r p_rps p_p50 p_p99 p_cpu p_bad <<<"$(median "${PC[@]}")"
read -r l_rps l_p50 l_p99 l_cpu l_bad <<<"$(median "${LO[@]}")"
read -r r_rps r_p50 r_p99 r_cpu r_bad <<<"$(median "${RE[@]}")"
echo "load: wrk -t1 -c$CONNS -d${SECS}s, proxies on CPU 0 with one worker, origin, wrk and redis on CPU 1; median of $ROUNDS rounds"
for row in "nginx $n_rps $n_p50 $n_p99 $n_cpu $n_bad" "plain $p_rps $p_p50 $p_p99 $p_cpu $p_bad" \
           "rl-local $l_rps $l_p50 $l_p99 $l_cpu $l_bad" "rl-redis $r_rps $r_p50 $r_p99 $r_cpu $r_bad"; do
  read -r name rps p50 p99 cpu bad <<<"$row"
  printf "%-10s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s\n" "$name" "$rps" "$p50" "$p99" "$cpu" "$bad"
done
awk -v p="$p_cpu" -v l="$l_cpu" -v r="$r_cpu" -v n="$n_cpu" 'BEGIN {
  printf "added cpu_us_per_req: local=%+.2f redis=%+.2f (vs plain); ratios to nginx: plain=%.2f local=%.2f redis=%.2f\n", l - p, r - p, p / n, l / n, r / n }'
