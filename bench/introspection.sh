#!/usr/bin/env bash
# What OAuth2 token introspection costs per request: Portcullis proxying
# plainly, with `oauth2_introspection` and one token (cached after its first
# call), and with a new token on every request (every request asks the
# authorization server: the cost of the call out).
#
#   bench/introspection.sh [-d SECONDS] [-c CONNECTIONS] [-r ROUNDS]
#
# Same layout and method as bench/run.sh (proxy alone on CPU 0; origin, wrk
# and the authorization server on CPU 1; CPU time per request of the proxy
# process only; median of the rounds). The authorization server is an nginx
# answering every introspection with an active token.
set -euo pipefail
SECS=10; CONNS=16; ROUNDS=3
while getopts "d:c:r:" o; do case $o in d) SECS=$OPTARG;; c) CONNS=$OPTARG;; r) ROUNDS=$OPTARG;; *) exit 2;; esac; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

cat >"$W/auth.conf" <<CONF
worker_processes 1; daemon off; error_log /dev/null; pid $W/auth.pid;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18005 reuseport; keepalive_requests 1000000;
  location / { default_type application/json; return 200 '{"active":true,"sub":"bench-user","scope":"read"}'; } } }
CONF
taskset -c 1 nginx -c "$W/auth.conf" & APID=$!
trap 'kill $APID 2>/dev/null; cleanup' EXIT
for _ in $(seq 50); do curl -s -o /dev/null -X POST "http://127.0.0.1:18005/" && break; sleep 0.1; done

CONFIG=$ROOT/bench/portcullis-introspection.yaml
declare -a PC CA MI
for r in $(seq "$ROUNDS"); do
  WRK_ARGS=()
  PC+=("$(measure portcullis "$BIN" run -c "$ROOT/bench/portcullis.yaml")")
  WRK_ARGS=(-H "authorization: Bearer one-cached-token")
  CA+=("$(measure cached "$BIN" run -c "$CONFIG")")
  WRK_ARGS=(-s "$ROOT/bench/unique-token.lua")
  MI+=("$(measure miss "$BIN" run -c "$CONFIG")")
  echo "round $r: plain [${PC[-1]}] cached [${CA[-1]}] miss [${MI[-1]}]" >&2
done
read -r p_rps p_p50 p_p99 p_cpu p_bad <<<"$(median "${PC[@]}")"
read -r c_rps c_p50 c_p99 c_cpu c_bad <<<"$(median "${CA[@]}")"
read -r m_rps m_p50 m_p99 m_cpu m_bad <<<"$(median "${MI[@]}")"
echo "load: wrk -t1 -c$CONNS -d${SECS}s, proxy on CPU 0 with one worker, origin, wrk and the authorization server on CPU 1; median of $ROUNDS rounds"
for row in "plain $p_rps $p_p50 $p_p99 $p_cpu $p_bad" "cached $c_rps $c_p50 $c_p99 $c_cpu $c_bad" \
           "miss $m_rps $m_p50 $m_p99 $m_cpu $m_bad"; do
  read -r name rps p50 p99 cpu bad <<<"$row"
  printf "%-10s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s\n" "$name" "$rps" "$p50" "$p99" "$cpu" "$bad"
done
awk -v p="$p_cpu" -v c="$c_cpu" -v m="$m_cpu" 'BEGIN {
  printf "added cpu_us_per_req: cached=%+.2f miss=%+.2f (vs plain)\n", c - p, m - p }'
