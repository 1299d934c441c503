#!/usr/bin/env bash
# Portcullis vs nginx over other client protocols, each proxy in front of the
# same plain-HTTP/1.1 origin:
#   https  HTTPS/1.1: wrk over TLS with keep-alive (no ALPN);
#   h2     HTTP/2 over TLS (ALPN h2): h2load;
#   h2c    cleartext HTTP/2 with prior knowledge: h2load to an http:// URL.
#
#   bench/protocols.sh [-d SECONDS] [-c CONNECTIONS] [-r ROUNDS] [-m STREAMS] [-p]
#
# Same layout and method as bench/run.sh: each proxy alone on CPU 0 with one
# worker, the origin and the load generator on CPU 1, CPU time per request
# from the proxy's user+sys, median round (by CPU per request) of ROUNDS, the
# proxies alternating. Both proxies serve the same self-signed ECDSA P-256
# certificate, generated here with openssl, and negotiate TLS 1.3 (the script
# prints what each one negotiated). Connections are kept alive, so handshakes
# happen only when the load generator connects: the TLS figures are the cost
# of TLS records, not of handshakes.
#
# h2load runs with -c CONNECTIONS -m STREAMS (default 10 streams per
# connection). It reports no latency percentiles: the h2 and h2c rows show the
# mean and max of its "time for request". -p adds p50/p99 computed from its
# per-request log (--log-file), which costs the load generator one write(2)
# per request on CPU 1, so rps and latency move a little under -p.
#
# Portcullis runs bench/portcullis-tls.yaml (TLS) and bench/portcullis.yaml
# (h2c: a cleartext listener serves HTTP/2 prior knowledge by itself). Needs
# nginx, wrk, h2load (nghttp2-client) and openssl (installed from Debian when
# missing). BENCH_NO_BUILD=1 skips the cargo build (see bench/lib.sh).
set -euo pipefail
SECS=10; CONNS=64; ROUNDS=3; STREAMS=10; PCT=""
while getopts "d:c:r:m:p" o; do case $o in d) SECS=$OPTARG;; c) CONNS=$OPTARG;; r) ROUNDS=$OPTARG;; m) STREAMS=$OPTARG;; p) PCT=1;; *) exit 2;; esac; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v h2load >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "bench: installing nghttp2-client (h2load) and openssl" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client openssl >/dev/null
  else
    echo "bench: needs h2load and openssl: sudo apt-get install nghttp2-client openssl" >&2; exit 2
  fi
fi
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
H2LOAD_ARGS=(-m "$STREAMS"); H2LOAD_LOG=$PCT

# One certificate for both proxies.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -keyout "$W/key.pem" -out "$W/cert.pem" -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
export BENCH_CERT=$W/cert.pem BENCH_KEY=$W/key.pem

# nginx: lib.sh's proxy config with another listen line. nginx 1.25.1 moved
# HTTP/2 from a `listen` parameter to the `http2 on;` directive.
NGV=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
if [ "$(printf '%s\n' 1.25.1 "$NGV" | sort -V | head -1)" = 1.25.1 ]; then
  L_H2="listen $PROXY ssl; http2 on;"; L_H2C="listen $PROXY; http2 on;"
else
  L_H2="listen $PROXY ssl http2;"; L_H2C="listen $PROXY http2;"
fi
SSL="ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem; ssl_protocols TLSv1.2 TLSv1.3;"
grep -q "listen $PROXY;" "$W/nginx.conf" || { echo "bench: unexpected $W/nginx.conf" >&2; exit 1; }
sed "s|listen $PROXY;|listen $PROXY ssl; $SSL|" "$W/nginx.conf" >"$W/nginx-https.conf"
sed "s|listen $PROXY;|$L_H2 $SSL|" "$W/nginx.conf" >"$W/nginx-h2.conf"
sed "s|listen $PROXY;|$L_H2C|" "$W/nginx.conf" >"$W/nginx-h2c.conf"
for k in https h2 h2c; do
  nginx -t -q -c "$W/nginx-$k.conf" 2>"$W/nginx-$k.test" || { echo "bench: nginx rejects its $k config:" >&2; cat "$W/nginx-$k.test" >&2; exit 1; }
done
"$BIN" validate -c "$ROOT/bench/portcullis-tls.yaml" >/dev/null

# scenario: tool, URL, Portcullis config
declare -A TOOL URL CONF
TOOL[https]=wrk;   URL[https]=https://$PROXY/; CONF[https]=$ROOT/bench/portcullis-tls.yaml
TOOL[h2]=h2load;   URL[h2]=https://$PROXY/;    CONF[h2]=$ROOT/bench/portcullis-tls.yaml
TOOL[h2c]=h2load;  URL[h2c]=http://$PROXY/;    CONF[h2c]=$ROOT/bench/portcullis.yaml
KINDS=(https h2 h2c)

declare -A R
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  for k in "${KINDS[@]}"; do
    R[nginx-$k]+="$(measure_proto "nginx-$k" "${TOOL[$k]}" "${URL[$k]}" nginx -c "$W/nginx-$k.conf")|"
    R[portcullis-$k]+="$(measure_proto "portcullis-$k" "${TOOL[$k]}" "${URL[$k]}" "$BIN" run -c "${CONF[$k]}")|"
    line+=" $k nginx [$(awk -F'|' '{ print $(NF - 1) }' <<<"${R[nginx-$k]}")] portcullis [$(awk -F'|' '{ print $(NF - 1) }' <<<"${R[portcullis-$k]}")]"
  done
  echo "$line" >&2
done

echo "load: https: wrk -t1 -c$CONNS -d${SECS}s; h2, h2c: h2load -t1 -c$CONNS -m$STREAMS -D$SECS; proxies on CPU 0 with one worker, origin and load generator on CPU 1; median of $ROUNDS rounds"
echo "negotiated (client to proxy; both proxies talk HTTP/1.1 to the origin):"
for k in "${KINDS[@]}"; do for p in nginx portcullis; do
  printf "  %-17s %s\n" "$p-$k" "$(cat "$W/$p-$k.proto" 2>/dev/null)"
  if [ "${TOOL[$k]}" = h2load ] && ! grep -qE '(ALPN |, )h2c?$' "$W/$p-$k.proto" 2>/dev/null; then
    echo "  warning: $p-$k did not run over HTTP/2" >&2
  fi
done; done
for k in "${KINDS[@]}"; do
  declare -A V=()
  for p in nginx portcullis; do
    IFS='|' read -r -a rounds <<<"${R[$p-$k]}"
    read -r rps la lb cpu bad err p50 p99 <<<"$(median "${rounds[@]}")"
    V[$p]="$rps $la $lb $cpu ${p50:--} ${p99:--}"
    if [ "${TOOL[$k]}" = wrk ]; then
      printf "%-5s %-11s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s errors=%s\n" "$k" "$p" "$rps" "$la" "$lb" "$cpu" "$bad" "$err"
    else
      printf "%-5s %-11s rps=%-10s mean=%-8s max=%-9s %scpu_us_per_req=%-6s non2xx=%s errors=%s\n" "$k" "$p" "$rps" "$la" "$lb" \
        "$([ -n "$PCT" ] && printf 'p50=%-9s p99=%-9s ' "$p50" "$p99")" "$cpu" "$bad" "$err"
    fi
  done
  read -r n_rps n_la n_lb n_cpu n_p50 n_p99 <<<"${V[nginx]}"
  read -r p_rps p_la p_lb p_cpu p_p50 p_p99 <<<"${V[portcullis]}"
  if [ "${TOOL[$k]}" = wrk ]; then
    awk -v k="$k" -v pc="$p_cpu" -v nc="$n_cpu" -v pr="$p_rps" -v nr="$n_rps" -v pp="$(to_us "$p_lb")" -v np="$(to_us "$n_lb")" 'BEGIN {
      printf "ratio %s (portcullis/nginx): cpu_per_req=%.2f rps=%.2f p99=%.2f\n", k, pc / nc, pr / nr, pp / np }'
  else
    awk -v k="$k" -v pc="$p_cpu" -v nc="$n_cpu" -v pr="$p_rps" -v nr="$n_rps" -v pm="$(to_us "$p_la")" -v nm="$(to_us "$n_la")" \
        -v pp="$([ -n "$PCT" ] && to_us "$p_p99")" -v np="$([ -n "$PCT" ] && to_us "$n_p99")" 'BEGIN {
      printf "ratio %s (portcullis/nginx): cpu_per_req=%.2f rps=%.2f mean_latency=%.2f", k, pc / nc, pr / nr, pm / nm
      if (np > 0) printf " p99=%.2f", pp / np
      printf "\n" }'
  fi
done
[ -n "$PCT" ] || echo "note: h2load reports no latency percentiles; h2/h2c show the mean and max of its \"time for request\" (-p adds p50/p99 from its per-request log)"
