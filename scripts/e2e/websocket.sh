#!/usr/bin/env bash
# End-to-end WebSocket conformance through the gateway: the Autobahn
# TestSuite's fuzzing-client cases, driven by kosoku (PyPI: a Rust runner of
# the Autobahn case files), against a real echo server, once directly and
# once through Portcullis (HTTP/1.1 Upgrade proxied, then bytes bridged).
#
#   scripts/e2e/websocket.sh
#   PORTCULLIS_BIN=target/release/portcullis scripts/e2e/websocket.sh
#
# Prints the count of cases per outcome (OK / NON-STRICT / INFORMATIONAL /
# UNIMPLEMENTED / FAILED, plus kosoku's ERROR for a case that could not run)
# for both runs and every case whose outcome differs. Exits 1 if any case
# FAILED (or ERROR) through the gateway, 2 on a setup problem.
#
# Cases: every case of groups 1-10 (framing, pings, reserved bits, opcodes,
# fragmentation, UTF-8, close handling, limits/performance 9.*, auto-fragment
# 10.*), and a sample of the permessage-deflate groups 12.* and 13.*: cases
# .1 (16-byte messages), .5 (4 KiB) and .11 (8 KiB in 256-byte fragments) of
# each subgroup, 36 of their 216 cases. The whole of 12.*/13.* are 1000-message
# compression throughput runs that take about 6 minutes per run on this
# 2-core machine; WS_FULL=1 runs them all (slow).
#
# Environment:
#   PORTCULLIS_BIN   gateway binary (default target/debug/portcullis; built
#                    with `cargo build` when the default is missing)
#   WS_ECHO_IMPL     autobahn (default: Autobahn|Python, passes every case of
#                    1-10) or websockets (fails 7.1.5 by itself; see ws_echo.py)
#   WS_CASES         space-separated case ids / globs (kosoku -i) instead of
#                    the default selection, e.g. WS_CASES="1.* 7.1.5"
#   WS_FULL=1        the whole suite, 12.* and 13.* included
#   WS_PARALLELISM   cases run at once (default 1)
#   WS_OUT           where results, reports and logs go
#                    (default target/e2e-websocket)
#
# Results: $WS_OUT/{direct,gateway}.json (one record per case), Autobahn HTML
# reports in $WS_OUT/report-{direct,gateway}/index.html, and the logs of the
# echo server and the gateway.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
started=$SECONDS

KOSOKU_VERSION=0.1.0
AUTOBAHN_VERSION=26.10.2
WEBSOCKETS_VERSION=17.4

VENV=$ROOT/target/e2e-venv
OUT=${WS_OUT:-$ROOT/target/e2e-websocket}
IMPL=${WS_ECHO_IMPL:-autobahn}
PARALLELISM=${WS_PARALLELISM:-1}

log() { printf 'websocket-e2e: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

case $IMPL in autobahn|websockets) ;; *) die "WS_ECHO_IMPL must be autobahn or websockets, not '$IMPL'" ;; esac

# --- gateway binary -------------------------------------------------------
if [ -n "${PORTCULLIS_BIN:-}" ]; then
  BIN=$PORTCULLIS_BIN
  [ -x "$BIN" ] || die "PORTCULLIS_BIN=$BIN is not an executable file"
else
  BIN=$ROOT/target/debug/portcullis
  if [ ! -x "$BIN" ]; then
    log "no $BIN: cargo build"
    cargo build --locked --bin portcullis >&2
  fi
fi
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac

# --- Python venv with kosoku and the echo server ----------------------------
# target/e2e-venv is shared with other e2e scripts: only add packages to it.
PY=$VENV/bin/python
have_pins() {
  "$PY" - "$KOSOKU_VERSION" "$AUTOBAHN_VERSION" "$WEBSOCKETS_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
want = dict(zip(("kosoku", "autobahn", "websockets"), sys.argv[1:]))
sys.exit(0 if all(version(p) == v for p, v in want.items()) else 1)
EOF
}
if [ ! -x "$PY" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! have_pins; then
  log "installing kosoku==$KOSOKU_VERSION autobahn==$AUTOBAHN_VERSION websockets==$WEBSOCKETS_VERSION into $VENV"
  "$PY" -m pip install -q --disable-pip-version-check \
    "kosoku==$KOSOKU_VERSION" "autobahn==$AUTOBAHN_VERSION" "websockets==$WEBSOCKETS_VERSION" >&2
  have_pins || die "the pinned packages are still missing from $VENV"
fi

# --- case selection ----------------------------------------------------------
CASE_ARGS=()
if [ -n "${WS_CASES:-}" ]; then
  for c in $WS_CASES; do CASE_ARGS+=(-i "$c"); done
  selection="WS_CASES=$WS_CASES"
elif [ "${WS_FULL:-0}" = 1 ]; then
  selection="the whole suite (WS_FULL=1)"
else
  for g in 1 2 3 4 5 6 7 9 10; do CASE_ARGS+=(-i "$g.*"); done   # there is no group 8
  for sub in 12.1 12.2 12.3 12.4 12.5 13.1 13.2 13.3 13.4 13.5 13.6 13.7; do
    for n in 1 5 11; do CASE_ARGS+=(-i "$sub.$n"); done
  done
  selection="groups 1-10 in full; 12.*/13.* (permessage-deflate throughput) sampled: cases .1, .5, .11 of each subgroup (WS_FULL=1 for all)"
fi

# --- processes, cleanup ------------------------------------------------------
mkdir -p "$OUT"
rm -rf "$OUT/report-direct" "$OUT/report-gateway"
rm -f "$OUT/direct.json" "$OUT/gateway.json"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-ws-e2e.XXXXXX")
ECHO_PID=""
GW_PID=""
RUN_PID=""
cleanup() {
  local pid
  for pid in $RUN_PID $GW_PID $ECHO_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $RUN_PID $GW_PID $ECHO_PID; do
    # give each a few seconds, then insist
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- echo server ---------------------------------------------------------------
"$PY" scripts/e2e/ws_echo.py --impl "$IMPL" --port-file "$TMP/echo.port" >"$OUT/echo.log" 2>&1 &
ECHO_PID=$!
for _ in $(seq 150); do
  [ -s "$TMP/echo.port" ] && break
  kill -0 "$ECHO_PID" 2>/dev/null || { cat "$OUT/echo.log" >&2; die "the echo server exited"; }
  sleep 0.1
done
[ -s "$TMP/echo.port" ] || die "the echo server did not listen within 15s (see $OUT/echo.log)"
ECHO_PORT=$(cat "$TMP/echo.port")

# --- gateway -------------------------------------------------------------------
# Port 0: the gateway picks a free port and logs it. No admin listener.
# A WebSocket route with the documented idle timeout; the body limit does
# not apply to upgraded sockets but is raised anyway so it cannot interfere.
CFG=$TMP/gateway.yaml
cat >"$CFG" <<EOF
gateway: { workers: 1 }
listeners:
  - name: public
    address: 127.0.0.1:0
upstreams:
  - name: echo
    targets: [{ address: 127.0.0.1:$ECHO_PORT }]
routes:
  - name: ws
    match: { paths: ["/"] }
    upstream: echo
    timeouts: { read: 5m }
    max_body_size: 64MiB
EOF
"$BIN" validate -c "$CFG" >"$OUT/validate.log" 2>&1 || { cat "$OUT/validate.log" >&2; die "the gateway config is invalid"; }
cp "$CFG" "$OUT/gateway.yaml"

"$BIN" run -c "$CFG" --log-format json >"$OUT/gateway.log" 2>&1 &
GW_PID=$!
GW_ADDR=""
for _ in $(seq 300); do
  GW_ADDR=$(grep '"message":"listening"' "$OUT/gateway.log" | sed -n 's/.*"address":"\([0-9.:]*\)".*/\1/p' | head -1 || true)
  [ -n "$GW_ADDR" ] && break
  kill -0 "$GW_PID" 2>/dev/null || { cat "$OUT/gateway.log" >&2; die "the gateway exited"; }
  sleep 0.1
done
[ -n "$GW_ADDR" ] || die "the gateway did not listen within 30s (see $OUT/gateway.log)"

# Ready when a WebSocket echo works end to end through the gateway.
ready=""
for _ in $(seq 50); do
  if "$PY" - "ws://$GW_ADDR/" <<'EOF' 2>"$TMP/ready.err"; then ready=1; break; fi
import sys
from websockets.sync.client import connect
with connect(sys.argv[1], open_timeout=2, close_timeout=2) as ws:
    ws.send("ready?")
    assert ws.recv(timeout=2) == "ready?"
EOF
  kill -0 "$GW_PID" 2>/dev/null || { cat "$OUT/gateway.log" >&2; die "the gateway exited"; }
  sleep 0.2
done
[ -n "$ready" ] || { cat "$TMP/ready.err" >&2; die "no WebSocket echo through the gateway at ws://$GW_ADDR/"; }

log "echo server ($IMPL) on 127.0.0.1:$ECHO_PORT, gateway $BIN on $GW_ADDR"
log "cases: $selection"

# --- the runs -------------------------------------------------------------------
run_cases() { # label url
  # In the background and waited for, so that a TERM to this script is
  # handled at once rather than after the run.
  "$PY" scripts/e2e/ws_autobahn.py run "$2" --label "$1" --out "$OUT/$1.json" \
    --report-dir "$OUT/report-$1" -p "$PARALLELISM" ${CASE_ARGS[@]+"${CASE_ARGS[@]}"} &
  RUN_PID=$!
  local rc=0
  wait "$RUN_PID" || rc=$?
  RUN_PID=""
  return "$rc"
}
run_cases direct "ws://127.0.0.1:$ECHO_PORT/"
run_cases gateway "ws://$GW_ADDR/"

kill -0 "$GW_PID" 2>/dev/null || log "WARNING: the gateway is no longer running (see $OUT/gateway.log)"

echo
echo "== Autobahn fuzzing-client cases: $selection"
echo "== kosoku $KOSOKU_VERSION; echo server: $IMPL ($( [ "$IMPL" = autobahn ] && echo "$AUTOBAHN_VERSION" || echo "$WEBSOCKETS_VERSION")); gateway: $BIN"
status=0
"$PY" scripts/e2e/ws_autobahn.py compare "$OUT/direct.json" "$OUT/gateway.json" || status=$?
echo "== results and HTML reports in $OUT ($((SECONDS - started))s)"
if [ "$status" = 0 ]; then
  echo "websocket-e2e: PASS: no case FAILED through the gateway"
else
  echo "websocket-e2e: FAIL"
fi
exit "$status"
