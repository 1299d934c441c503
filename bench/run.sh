#!/usr/bin/env bash
# Side-by-side reverse-proxy benchmark: Portcullis vs nginx on this machine,
# same origin, same load.
#
#   bench/run.sh [-d SECONDS] [-c CONNECTIONS] [-r ROUNDS]
#
# Layout (2 cores): the origin (an nginx returning a short body) and the load
# generator (wrk) share CPU 1; each proxy in turn runs alone on CPU 0 with one
# worker. For each proxy it prints requests/s, p50/p99 latency and the proxy's
# CPU time per request (user+sys of its processes / requests served), which
# is the figure least disturbed by a noisy machine, then the ratios
# Portcullis/nginx. bench/portcullis-lb.yaml (3 targets, ewma) runs too, to
# show what load balancing adds per request. A bare hyper proxy (examples/bare_proxy.rs: no gateway
# logic at all) runs too, to show which part of the gap is the HTTP stack's,
# and so does examples/bare_pair.rs, hyper's two connections and nothing
# else (one upstream connection per client connection, no pool): the floor
# of any proxy built on hyper. "nginx-same" is nginx configured to do the
# per-request work Portcullis does by default (forwarding headers, request
# ID both ways; see bench/lib.sh), for a like-for-like ratio next to the
# plain one. With -r > 1 the proxies alternate and the
# median round is reported. Needs nginx and wrk (installed from Debian when missing).
set -euo pipefail
SECS=10; CONNS=64; ROUNDS=3
while getopts "d:c:r:" o; do case $o in d) SECS=$OPTARG;; c) CONNS=$OPTARG;; r) ROUNDS=$OPTARG;; *) exit 2;; esac; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

declare -a NG NS PC BH BP LB
for r in $(seq "$ROUNDS"); do
  NG+=("$(measure nginx nginx -c "$W/nginx.conf")")
  NS+=("$(measure nginx-same nginx -c "$W/nginx-same.conf")")
  PC+=("$(measure portcullis "$BIN" run -c "$ROOT/bench/portcullis.yaml")")
  BH+=("$(measure bare-hyper "$BARE" "$PROXY" "$ORIGIN")")
  BP+=("$(measure bare-pair "$PAIR" "$PROXY" "$ORIGIN")")
  LB+=("$(measure portcullis-lb "$BIN" run -c "$ROOT/bench/portcullis-lb.yaml")")
  echo "round $r: nginx [${NG[-1]}] nginx-same [${NS[-1]}] portcullis [${PC[-1]}] bare-hyper [${BH[-1]}] bare-pair [${BP[-1]}] portcullis-lb [${LB[-1]}]" >&2
done
read -r n_rps n_p50 n_p99 n_cpu n_bad <<<"$(median "${NG[@]}")"
read -r s_rps s_p50 s_p99 s_cpu s_bad <<<"$(median "${NS[@]}")"
read -r p_rps p_p50 p_p99 p_cpu p_bad <<<"$(median "${PC[@]}")"
read -r b_rps b_p50 b_p99 b_cpu b_bad <<<"$(median "${BH[@]}")"
read -r l_rps l_p50 l_p99 l_cpu l_bad <<<"$(median "${LB[@]}")"
read -r q_rps q_p50 q_p99 q_cpu q_bad <<<"$(median "${BP[@]}")"
out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://$ORIGIN/" 2>&1)
echo "load: wrk -t1 -c$CONNS -d${SECS}s, proxies on CPU 0 with one worker, origin and wrk on CPU 1; median of $ROUNDS rounds"
printf "%-11s rps=%-10s p50=%-9s p99=%-9s\n" direct "$(awk '/Requests\/sec/{print $2}' <<<"$out")" "$(awk '$1=="50%"{print $2}' <<<"$out")" "$(awk '$1=="99%"{print $2}' <<<"$out")"
printf "%-11s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s\n" nginx "$n_rps" "$n_p50" "$n_p99" "$n_cpu" "$n_bad"
printf "%-11s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s  (nginx setting the headers Portcullis sets)\n" nginx-same "$s_rps" "$s_p50" "$s_p99" "$s_cpu" "$s_bad"
printf "%-11s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s\n" portcullis "$p_rps" "$p_p50" "$p_p99" "$p_cpu" "$p_bad"
printf "%-11s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s  (reference: hyper with hyper-util's pooled client)\n" bare-hyper "$b_rps" "$b_p50" "$b_p99" "$b_cpu" "$b_bad"
printf "%-11s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s  (floor: hyper's connections alone)\n" bare-pair "$q_rps" "$q_p50" "$q_p99" "$q_cpu" "$q_bad"
awk -v pc="$p_cpu" -v nc="$n_cpu" -v pr="$p_rps" -v nr="$n_rps" -v pp="$(to_us "$p_p99")" -v np="$(to_us "$n_p99")" 'BEGIN {
  printf "ratio (portcullis/nginx): cpu_per_req=%.2f rps=%.2f p99=%.2f\n", pc / nc, pr / nr, pp / np }'
awk -v pc="$p_cpu" -v sc="$s_cpu" -v pp="$(to_us "$p_p99")" -v sp="$(to_us "$s_p99")" 'BEGIN {
  printf "ratio (portcullis/nginx-same, the same work): cpu_per_req=%.2f p99=%.2f\n", pc / sc, pp / sp }'
printf "%-11s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s  (3 targets, ewma)\n" portcullis-lb "$l_rps" "$l_p50" "$l_p99" "$l_cpu" "$l_bad"
awk -v lc="$l_cpu" -v pc="$p_cpu" 'BEGIN { printf "ratio (portcullis-lb/portcullis): cpu_per_req=%.2f  (what balancing over 3 targets adds)\n", lc / pc }'
awk -v bc="$b_cpu" -v nc="$n_cpu" -v pc="$p_cpu" -v qc="$q_cpu" 'BEGIN {
  printf "ratio (bare-hyper/nginx): cpu_per_req=%.2f; portcullis/bare-hyper: cpu_per_req=%.2f\n", bc / nc, pc / bc
  printf "ratio (bare-pair/nginx): cpu_per_req=%.2f; portcullis/bare-pair: cpu_per_req=%.2f\n", qc / nc, pc / qc }'
