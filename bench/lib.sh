# Shared by the benchmark scripts (sourced, not run): installs nginx and wrk
# when missing, builds the release binaries, starts the origin on CPU 1 and
# defines `measure`, which runs one proxy alone on CPU 0 and prints
# "rps p50 p99 cpu_us_per_req non2xx". Extra wrk arguments (headers) come
# from the WRK_ARGS array. Expects SECS, CONNS and ROOT to be set.
# `measure_proto` does the same over HTTPS and HTTP/2 (bench/protocols.sh).
[ "${WRK_ARGS+set}" = set ] || WRK_ARGS=()
[ "${H2LOAD_ARGS+set}" = set ] || H2LOAD_ARGS=()
need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  if [ "$(id -u)" = 0 ]; then
    echo "bench: installing nginx-light and wrk" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
  else
    echo "bench: needs nginx and wrk: sudo apt-get install nginx-light wrk" >&2; exit 2
  fi
fi
# BENCH_NO_BUILD=1 skips the build and uses the binaries already in target/release.
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example bare_proxy --example bare_pair)
fi
BIN=$ROOT/target/release/portcullis
BARE=$ROOT/target/release/examples/bare_proxy
PAIR=$ROOT/target/release/examples/bare_pair

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
# nginx doing the per-request work Portcullis does by default: the
# forwarding headers (X-Forwarded-For/-Proto/-Host and Forwarded, from an
# untrusted client, so replaced rather than appended), and a request ID
# (the client's when it sends one, else generated) sent upstream and set on
# the response. Hop-by-hop stripping, timeouts and the replay of a request
# on a stale keep-alive connection nginx does by default. The generated ID
# is built from nginx's process, connection and request counters, which is
# what Portcullis's is (a per-thread random prefix and a counter): nginx's
# own $request_id draws from OpenSSL's RAND_bytes and measured about 2 µs
# per request here, which would compare the random generators instead.
cat > "$W/nginx-same.conf" <<CONF
worker_processes 1; daemon off; pid $W/nginx.pid; error_log /dev/null crit;
events { worker_connections 8192; }
http { access_log off; upstream o { server $ORIGIN; keepalive 512; }
  map \$http_x_request_id \$rid { "" "\$pid-\$connection-\$connection_requests"; default \$http_x_request_id; }
  server { listen $PROXY; keepalive_requests 1000000;
  location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_set_header X-Forwarded-For \$remote_addr; proxy_set_header X-Forwarded-Proto \$scheme;
    proxy_set_header X-Forwarded-Host \$http_host;
    proxy_set_header Forwarded "for=\$remote_addr;proto=\$scheme;host=\\"\$http_host\\"";
    proxy_set_header X-Request-Id \$rid; add_header X-Request-Id \$rid always; } } }
CONF
cleanup() { [ -n "${OPID:-}" ] && kill "$OPID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
taskset -c 1 nginx -c "$W/origin.conf" & OPID=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://$ORIGIN/" && break; sleep 0.1; done

HZ=$(getconf CLK_TCK)
# ticks SID: CPU ticks (user+sys) of every process in session SID. The
# stat files are read by cat, not awk: a process that exits between the
# listing and the read would make mawk abort without printing its total.
ticks() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
    awk -v sid="$1" '{ sub(/^.*\) /, ""); if ($4 == sid) t += $12 + $13 } END { print t + 0 }'
}

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


# measure_proto NAME TOOL URL CMD...: `measure` for other client protocols.
# The load goes to URL (on $PROXY) with TOOL, on CPU 1:
#   wrk     HTTP/1.1 with keep-alive (-t1 -c$CONNS, plus WRK_ARGS); TLS for
#           https:// URLs (wrk offers no ALPN);
#   h2load  HTTP/2 (-c$CONNS, plus the H2LOAD_ARGS array, e.g. -m 10): ALPN h2
#           for https://, prior knowledge (h2c) for http://.
# Prints "rps lat_a lat_b cpu_us_per_req non2xx errors [p50 p99]". For wrk,
# lat_a/lat_b are p50/p99. h2load reports no percentiles: lat_a/lat_b are the
# mean and max of its "time for request"; with H2LOAD_LOG=1 it also logs every
# request (--log-file: one write(2) per request on CPU 1, so the load
# generator runs slower) and p50/p99 from that log follow. errors: wrk's
# socket errors; h2load's errored + timed-out requests. What the connection
# negotiated (TLS version, cipher, ALPN) goes to $W/NAME.proto.
measure_proto() {
  local name=$1 tool=$2 url=$3; shift 3
  local probe=(-s -o /dev/null) up="" pid
  case $url in https://*) probe+=(-k);; esac
  if [ "$tool" = h2load ]; then
    case $url in https://*) probe+=(--http2);; *) probe+=(--http2-prior-knowledge);; esac
  fi
  setsid taskset -c 0 "$@" >"$W/$name.log" 2>&1 & pid=$!
  for _ in $(seq 100); do curl "${probe[@]}" "$url" >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
  [ -n "$up" ] || { echo "bench: $name did not answer on $url" >&2; cat "$W/$name.log" >&2; kill -- -"$pid" 2>/dev/null; return 1; }
  local load=() log=""
  if [ "$tool" = wrk ]; then
    load=(wrk -t1 -c"$CONNS" "${WRK_ARGS[@]}")
    case $url in
      https://*) timeout 5 openssl s_client -connect "$PROXY" -brief </dev/null 2>&1 |
                   awk -F': ' '/^Protocol version/ { v = $2 } /^Ciphersuite/ { c = $2 } END { print v, c, "(no ALPN: HTTP/1.1)" }' >"$W/$name.proto" ;;
      *) echo "cleartext HTTP/1.1" >"$W/$name.proto" ;;
    esac
  else
    load=(h2load -c"$CONNS" "${H2LOAD_ARGS[@]}")
    [ "${H2LOAD_LOG:-}" = 1 ] && log=$W/$name.h2log
  fi
  local c0 c1 out
  if [ "$tool" = wrk ]; then
    taskset -c 1 "${load[@]}" -d2s "$url" >/dev/null 2>&1   # warm up pools
    c0=$(ticks "$pid")
    out=$(taskset -c 1 "${load[@]}" -d"${SECS}s" --latency "$url" 2>&1)
    c1=$(ticks "$pid")
  else
    taskset -c 1 "${load[@]}" -D 2 "$url" >/dev/null 2>&1   # warm up pools
    rm -f "$W/$name.h2log"
    c0=$(ticks "$pid")
    out=$(taskset -c 1 "${load[@]}" -D "$SECS" ${log:+--log-file="$log"} "$url" 2>&1)
    c1=$(ticks "$pid")
    awk -F': *' '/^TLS Protocol/ { v = $2 } /^Cipher/ { c = $2 } /^Application protocol/ { a = $2 }
      END { if (v != "") printf "%s %s ALPN %s\n", v, c, a; else printf "cleartext, %s\n", a }' <<<"$out" >"$W/$name.proto"
  fi
  kill -- -"$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; sleep 0.5
  echo "$out" >"$W/$name.out"
  local pct="" n
  if [ -n "$log" ] && [ -s "$log" ]; then
    n=$(awk -F'\t' '$2 != "-1"' "$log" | wc -l)
    pct=$(awk -F'\t' '$2 != "-1" { print $3 }' "$log" | sort -n | awk -v n="$n" '
      function fmt(u) { return u >= 1000 ? sprintf("%.2fms", u / 1000) : sprintf("%dus", u) }
      NR == int(n * 0.5 + 0.999999) { p50 = $1 } NR == int(n * 0.99 + 0.999999) { p99 = $1 }
      END { print fmt(p50), fmt(p99) }')
    rm -f "$log"
  fi
  if [ "$tool" = wrk ]; then
    awk -v d=$((c1 - c0)) -v hz="$HZ" '
      /requests in/ { n = $1 } /Requests\/sec/ { rps = $2 } $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 }
      /Non-2xx/ { bad = $4 } /Socket errors/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
      END { printf "%s %s %s %.2f %d %d\n", rps, p50, p99, (n > 0 ? d / hz * 1e6 / n : -1), bad + 0, err + 0 }' <<<"$out"
  else
    awk -v d=$((c1 - c0)) -v hz="$HZ" -v pct="$pct" '
      /^finished in/ { rps = $4 }
      /^requests:/ { gsub(/,/, ""); n = $6; err = $12 + $14 }
      /^status codes:/ { gsub(/,/, ""); bad = $5 + $7 + $9 }
      /^time for request:/ { mean = $6; max = $5 }
      END { printf "%s %s %s %.2f %d %d%s\n", rps, mean, max, (n > 0 ? d / hz * 1e6 / n : -1), bad + 0, err + 0, (pct != "" ? " " pct : "") }' <<<"$out"
  fi
}
