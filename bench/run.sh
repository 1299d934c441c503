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
# logic at all) runs too, to show which part of the gap is the HTTP stack's. With -r > 1 the proxies alternate and the median round
# is reported. Needs nginx and wrk (installed from Debian when missing).
set -euo pipefail
SECS=10; CONNS=64; ROUNDS=3
while getopts "d:c:r:" o; do case $o in d) SECS=$OPTARG;; c) CONNS=$OPTARG;; r) ROUNDS=$OPTARG;; *) exit 2;; esac; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  if [ "$(id -u)" = 0 ]; then
    echo "bench: installing nginx-light and wrk" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
  else
    echo "bench: needs nginx and wrk: sudo apt-get install nginx-light wrk" >&2; exit 2
  fi
fi
(cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example bare_proxy)
BIN=$ROOT/target/release/portcullis
BARE=$ROOT/target/release/examples/bare_proxy

W=$(mktemp -d /tmp/portcullis-bench.XXXX)
ORIGIN=127.0.0.1:18001; PROXY=127.0.0.1:18080
cat > "$W/origin.conf" <<CONF
worker_processes 1; daemon off; pid $W/origin.pid; error_log /dev/null crit;
events { worker_connections 8192; }
http { access_log off; server { listen $ORIGIN reuseport; listen 127.0.0.1:18002 reuseport; listen 127.0.0.1:18003 reuseport; keepalive_requests 1000000;
  location / { return 200 "hello from origin\n"; } } }
CONF
cat > "$W/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $W/nginx.pid; error_log /dev/null crit;
events { worker_connections 8192; }
http { access_log off; upstream o { server $ORIGIN; keepalive 512; }
  server { listen $PROXY; keepalive_requests 1000000;
  location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cleanup() { [ -n "${OPID:-}" ] && kill "$OPID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
taskset -c 1 nginx -c "$W/origin.conf" & OPID=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://$ORIGIN/" && break; sleep 0.1; done

HZ=$(getconf CLK_TCK)
# user+sys clock ticks of every process in session $1
ticks() { awk -v sid="$1" '{ sub(/^.*\) /, ""); if ($4 == sid) t += $12 + $13 } END { print t + 0 }' /proc/[0-9]*/stat 2>/dev/null; }

# measure NAME CMD... -> prints "rps p50 p99 cpu_us non2xx" on stdout
measure() {
  local name=$1; shift
  setsid taskset -c 0 "$@" >"$W/$name.log" 2>&1 & local pid=$!
  local up=""
  for _ in $(seq 100); do curl -s -o /dev/null "http://$PROXY/" && { up=1; break; }; sleep 0.1; done
  [ -n "$up" ] || { echo "bench: $name did not answer on $PROXY" >&2; cat "$W/$name.log" >&2; kill -- -"$pid" 2>/dev/null; return 1; }
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s "http://$PROXY/" >/dev/null 2>&1   # warm up pools
  local c0 c1 out
  c0=$(ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://$PROXY/" 2>&1)
  c1=$(ticks "$pid")
  kill -- -"$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; sleep 0.5
  awk -v d=$((c1 - c0)) -v hz="$HZ" '
    /requests in/ { n = $1 } /Requests\/sec/ { rps = $2 } $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
    /Non-2xx/ { bad = $4 }
    END { printf "%s %s %s %.2f %d\n", rps, p50, p99, (n > 0 ? d / hz * 1e6 / n : -1), bad + 0 }' <<<"$out"
}

# to_us "1.23ms" -> microseconds
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) u = n; else if (v ~ /ms$/) u = n * 1000; else if (v ~ /s$/) u = n * 1e6; else u = n; printf "%.1f", u }'; }

declare -a NG PC BH LB
for r in $(seq "$ROUNDS"); do
  NG+=("$(measure nginx nginx -c "$W/nginx.conf")")
  PC+=("$(measure portcullis "$BIN" run -c "$ROOT/bench/portcullis.yaml")")
  BH+=("$(measure bare-hyper "$BARE" "$PROXY" "$ORIGIN")")
  LB+=("$(measure portcullis-lb "$BIN" run -c "$ROOT/bench/portcullis-lb.yaml")")
  echo "round $r: nginx [${NG[-1]}] portcullis [${PC[-1]}] bare-hyper [${BH[-1]}] portcullis-lb [${LB[-1]}]" >&2
done
# median round by CPU per request
median() { printf '%s\n' "$@" | sort -k4 -g | awk -v n=$# 'NR == int((n + 1) / 2)'; }
read -r n_rps n_p50 n_p99 n_cpu n_bad <<<"$(median "${NG[@]}")"
read -r p_rps p_p50 p_p99 p_cpu p_bad <<<"$(median "${PC[@]}")"
read -r b_rps b_p50 b_p99 b_cpu b_bad <<<"$(median "${BH[@]}")"
read -r l_rps l_p50 l_p99 l_cpu l_bad <<<"$(median "${LB[@]}")"
out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://$ORIGIN/" 2>&1)
echo "load: wrk -t1 -c$CONNS -d${SECS}s, proxies on CPU 0 with one worker, origin and wrk on CPU 1; median of $ROUNDS rounds"
printf "%-11s rps=%-10s p50=%-9s p99=%-9s\n" direct "$(awk '/Requests\/sec/{print $2}' <<<"$out")" "$(awk '$1=="50%"{print $2}' <<<"$out")" "$(awk '$1=="99%"{print $2}' <<<"$out")"
printf "%-11s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s\n" nginx "$n_rps" "$n_p50" "$n_p99" "$n_cpu" "$n_bad"
printf "%-11s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s\n" portcullis "$p_rps" "$p_p50" "$p_p99" "$p_cpu" "$p_bad"
printf "%-11s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s  (reference: hyper alone)\n" bare-hyper "$b_rps" "$b_p50" "$b_p99" "$b_cpu" "$b_bad"
awk -v pc="$p_cpu" -v nc="$n_cpu" -v pr="$p_rps" -v nr="$n_rps" -v pp="$(to_us "$p_p99")" -v np="$(to_us "$n_p99")" 'BEGIN {
  printf "ratio (portcullis/nginx): cpu_per_req=%.2f rps=%.2f p99=%.2f\n", pc / nc, pr / nr, pp / np }'
printf "%-11s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s  (3 targets, ewma)\n" portcullis-lb "$l_rps" "$l_p50" "$l_p99" "$l_cpu" "$l_bad"
awk -v lc="$l_cpu" -v pc="$p_cpu" 'BEGIN { printf "ratio (portcullis-lb/portcullis): cpu_per_req=%.2f  (what balancing over 3 targets adds)\n", lc / pc }'
awk -v bc="$b_cpu" -v nc="$n_cpu" -v pc="$p_cpu" 'BEGIN {
  printf "ratio (bare-hyper/nginx): cpu_per_req=%.2f; portcullis/bare-hyper: cpu_per_req=%.2f\n", bc / nc, pc / bc }'
