#!/usr/bin/env bash
# What authentication costs per request: Portcullis proxying plainly, with
# `key_auth` (1,000 consumers) and with `jwt` (RS256, 2048-bit key), against
# the same origin under the same load, plus nginx as the reference.
#
#   bench/auth.sh [-d SECONDS] [-c CONNECTIONS] [-r ROUNDS]
#
# Same layout and method as bench/run.sh (proxy alone on CPU 0, origin and
# wrk on CPU 1; CPU time per request of the proxy; median of the rounds).
# The JWT is signed here with the test key in tests/fixtures/jwt (openssl).
set -euo pipefail
SECS=10; CONNS=64; ROUNDS=3
while getopts "d:c:r:" o; do case $o in d) SECS=$OPTARG;; c) CONNS=$OPTARG;; r) ROUNDS=$OPTARG;; *) exit 2;; esac; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
head=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
now=$(date +%s)
body=$(printf '{"sub":"bench-user","iss":"https://issuer.bench","aud":"portcullis","iat":%d,"exp":%d}' "$now" $((now + 86400)) | b64url)
sig=$(printf '%s.%s' "$head" "$body" | openssl dgst -sha256 -sign "$ROOT/tests/fixtures/jwt/rsa1.key.pem" -binary | b64url)
TOKEN="$head.$body.$sig"

declare -a NG PC KA JW
for r in $(seq "$ROUNDS"); do
  WRK_ARGS=()
  NG+=("$(measure nginx nginx -c "$W/nginx.conf")")
  PC+=("$(measure portcullis "$BIN" run -c "$ROOT/bench/portcullis.yaml")")
  WRK_ARGS=(-H "x-api-key: bench-key-500-0123456789")
  KA+=("$(measure key-auth "$BIN" run -c "$ROOT/bench/portcullis-key-auth.yaml")")
  WRK_ARGS=(-H "authorization: Bearer $TOKEN")
  JW+=("$(measure jwt "$BIN" run -c "$ROOT/bench/portcullis-jwt.yaml")")
  echo "round $r: nginx [${NG[-1]}] plain [${PC[-1]}] key_auth [${KA[-1]}] jwt [${JW[-1]}]" >&2
done
read -r n_rps n_p50 n_p99 n_cpu n_bad <<<"$(median "${NG[@]}")"
read -r p_rps p_p50 p_p99 p_cpu p_bad <<<"$(median "${PC[@]}")"
read -r k_rps k_p50 k_p99 k_cpu k_bad <<<"$(median "${KA[@]}")"
read -r j_rps j_p50 j_p99 j_cpu j_bad <<<"$(median "${JW[@]}")"
echo "load: wrk -t1 -c$CONNS -d${SECS}s, proxies on CPU 0 with one worker, origin and wrk on CPU 1; median of $ROUNDS rounds"
for row in "nginx $n_rps $n_p50 $n_p99 $n_cpu $n_bad" "plain $p_rps $p_p50 $p_p99 $p_cpu $p_bad" \
           "key_auth $k_rps $k_p50 $k_p99 $k_cpu $k_bad" "jwt-rs256 $j_rps $j_p50 $j_p99 $j_cpu $j_bad"; do
  read -r name rps p50 p99 cpu bad <<<"$row"
  printf "%-10s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%-6s non2xx=%s\n" "$name" "$rps" "$p50" "$p99" "$cpu" "$bad"
done
awk -v p="$p_cpu" -v k="$k_cpu" -v j="$j_cpu" -v n="$n_cpu" 'BEGIN {
  printf "added cpu_us_per_req: key_auth=%+.2f jwt-rs256=%+.2f (vs plain); ratios to nginx: plain=%.2f key_auth=%.2f jwt=%.2f\n", k - p, j - p, p / n, k / n, j / n }'
