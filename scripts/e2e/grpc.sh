#!/usr/bin/env bash
# End-to-end gRPC through Portcullis, with a real gRPC server and client
# (Python grpcio from PyPI; no protoc, generic handlers and raw bytes).
#
#   scripts/e2e/grpc.sh                      # gRPC, gRPC-Web and CORS checks
#   E2E_GRPC_WEB=0 scripts/e2e/grpc.sh       # gRPC only
#   PORTCULLIS_BIN=target/release/portcullis scripts/e2e/grpc.sh
#   E2E_KEEP=1 scripts/e2e/grpc.sh           # keep the work dir (config, logs)
#
# Starts the Python e2e.Echo server on a free port, the gateway on a
# generated config (cleartext listener, `http2: true` upstream), runs the
# client checks (one line each) and exits non-zero if any fails.
set -euo pipefail
CALLER_DIR=$PWD
cd "$(dirname "$0")/../.."

GRPCIO_VERSION=1.85.1
VENV=${E2E_VENV:-target/e2e-venv}
BIN=${PORTCULLIS_BIN:-target/debug/portcullis}
# A relative PORTCULLIS_BIN is relative to where the script was started.
if [ -n "${PORTCULLIS_BIN:-}" ] && [[ "$BIN" != /* ]] && [ -e "$CALLER_DIR/$BIN" ]; then BIN="$CALLER_DIR/$BIN"; fi
HERE=scripts/e2e
T0=$(date +%s%N)

log() { echo "grpc-e2e: $*" >&2; }

# ---- Python venv (shared with other e2e scripts: only ever add packages) ----
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import grpc, sys; sys.exit(grpc.__version__ != '$GRPCIO_VERSION')" 2>/dev/null; then
  log "installing grpcio==$GRPCIO_VERSION into $VENV"
  "$PY" -m pip install -q --disable-pip-version-check "grpcio==$GRPCIO_VERSION"
fi

# ---- Gateway binary ----
if [ ! -x "$BIN" ]; then
  log "$BIN missing: building it once"
  case "$BIN" in
    *target/release/*) cargo build --release ;;
    *) cargo build ;;
  esac
fi

# ---- Work dir, processes, cleanup ----
WORK=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-grpc-e2e.XXXXXX")
SERVER_PID=""
GATEWAY_PID=""
CLIENT_PID=""
stop() {  # stop PID: TERM, then KILL after 3 s
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT
  trap '' INT TERM  # finish cleaning up even if signalled again
  stop "$CLIENT_PID"
  stop "$GATEWAY_PID"
  stop "$SERVER_PID"
  if [ "$rc" != 0 ]; then
    log "failed (exit $rc); gateway log tail:"
    tail -n 30 "$WORK/gateway.log" >&2 2>/dev/null || true
    log "server log tail:"
    tail -n 15 "$WORK/server.log" >&2 2>/dev/null || true
  fi
  if [ -n "${E2E_KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {  # a port that was free a moment ago
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {  # wait_port PORT PID WHAT
  local port=$1 pid=$2 what=$3
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { log "$what exited early"; return 1; }
    if "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  log "$what not listening on $port after 10 s"
  return 1
}

# ---- Upstream: the Python gRPC server ----
"$PY" -u "$HERE/grpc_e2e.py" server --port-file "$WORK/grpc.port" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
  [ -s "$WORK/grpc.port" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { log "grpc server exited early"; exit 1; }
  sleep 0.1
done
[ -s "$WORK/grpc.port" ] || { log "grpc server did not start"; exit 1; }
GRPC_PORT=$(cat "$WORK/grpc.port")

# ---- Gateway config ----
PUBLIC_PORT=$(free_port)
DEAD_PORT=$(free_port)  # nothing listens here
WEB_PORT=""
WEB=""
if [ "${E2E_GRPC_WEB:-1}" = 1 ]; then
  WEB_PORT=$(free_port)
  WEB=1
fi

CONFIG="$WORK/gateway.yaml"
{
  cat <<EOF
gateway:
  watch_interval: 0s
  shutdown_grace: 1s

listeners:
  - name: public
    address: 127.0.0.1:$PUBLIC_PORT
EOF
  [ -n "$WEB" ] && cat <<EOF
  - name: web
    address: 127.0.0.1:$WEB_PORT
EOF
  cat <<EOF

upstreams:
  - name: echo
    targets: [{ address: 127.0.0.1:$GRPC_PORT }]
    http2: true
  - name: dead
    targets: [{ address: 127.0.0.1:$DEAD_PORT }]
    http2: true

routes:
  - name: grpc
    listeners: [public]
    match: { paths: ["/e2e.Echo"] }
    upstream: echo
  - name: grpc-capped            # the gateway's own deadline: /e2e.Capped/e2e.Echo/Slow
    listeners: [public]
    match: { paths: ["/e2e.Capped"] }
    strip_prefix: true
    timeouts: { total: 300ms }
    upstream: echo
  - name: grpc-dead
    listeners: [public]
    match: { paths: ["/e2e.Dead"] }
    upstream: dead
EOF
  [ -n "$WEB" ] && cat <<EOF
  - name: grpc-web
    listeners: [web]
    match: { paths: ["/e2e.Echo"] }
    upstream: echo
    grpc_web: true
    plugins:
      - cors:
          origins: ["https://app.example"]
          headers: [content-type, x-grpc-web, x-user-agent, grpc-timeout]
          methods: [POST]
          expose_headers: [grpc-status, grpc-message]
EOF
  true
} >"$CONFIG"

"$BIN" validate -c "$CONFIG" >"$WORK/validate.log" 2>&1 || {
  log "config does not validate:"; cat "$WORK/validate.log" >&2; exit 1; }

# ---- Gateway ----
"$BIN" run -c "$CONFIG" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
wait_port "$PUBLIC_PORT" "$GATEWAY_PID" gateway
[ -n "$WEB" ] && wait_port "$WEB_PORT" "$GATEWAY_PID" "gateway (web listener)"

log "gateway $("$BIN" version 2>/dev/null | head -n1) ($BIN) on 127.0.0.1:$PUBLIC_PORT${WEB:+, gRPC-Web on 127.0.0.1:$WEB_PORT}; e2e.Echo on 127.0.0.1:$GRPC_PORT"

# ---- Client checks (in the background so a signal to this script is
# handled at once and the trap stops the client too) ----
"$PY" -u "$HERE/grpc_e2e.py" client --gateway "127.0.0.1:$PUBLIC_PORT" ${WEB:+--web "127.0.0.1:$WEB_PORT"} &
CLIENT_PID=$!
RC=0
wait "$CLIENT_PID" || RC=$?
CLIENT_PID=""
kill -0 "$GATEWAY_PID" 2>/dev/null || { log "gateway died during the checks"; RC=1; }
MS=$(( ($(date +%s%N) - T0) / 1000000 ))
log "$( [ $RC = 0 ] && echo ok || echo FAILED ) in $((MS / 1000)).$(( (MS % 1000) / 100 )) s"
exit $RC
