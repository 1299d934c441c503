# Shared by the benchmark scripts (sourced, not run): installs nginx and wrk
# when missing, builds the release binaries, starts the origin on CPU 1 and
# defines `measure`, which runs one proxy alone on CPU 0 and prints
# "rps p50 p99 cpu_us_per_req non2xx". Extra wrk arguments (headers) come
# from the WRK_ARGS array. Expects SECS, CONNS and ROOT to be set.
[ "${WRK_ARGS+set}" = set ] || WRK_ARGS=()
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
  for _ in $(seq 100); do curl -s -o /dev/null "http://$PROXY/" >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
  [ -n "$up" ] || { echo "bench: $name did not answer on $PROXY" >&2; cat "$W/$name.log" >&2; kill -- -"$pid" 2>/dev/null; return 1; }
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s "${WRK_ARGS[@]}" "http://$PROXY/" >/dev/null 2>&1   # warm up pools
  local c0 c1 out
  c0=$(ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "${WRK_ARGS[@]}" "http://$PROXY/" 2>&1)
  c1=$(ticks "$pid")
  kill -- -"$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; sleep 0.5
  awk -v d=$((c1 - c0)) -v hz="$HZ" '
    /requests in/ { n = $1 } /Requests\/sec/ { rps = $2 } $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
    /Non-2xx/ { bad = $4 }
    END { printf "%s %s %s %.2f %d\n", rps, p50, p99, (n > 0 ? d / hz * 1e6 / n : -1), bad + 0 }' <<<"$out"
}

# to_us "1.23ms" -> microseconds
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) u = n; else if (v ~ /ms$/) u = n * 1000; else if (v ~ /s$/) u = n * 1e6; else u = n; printf "%.1f", u }'; }

# median round by CPU per request
median() { printf '%s\n' "$@" | sort -k4 -g | awk -v n=$# 'NR == int((n + 1) / 2)'; }
