#!/usr/bin/env bash
# Runs the whole Portcullis test suite from a fresh machine: installs what
# the tests need from Debian's packages when it is missing, then runs every
# unit and integration test (real gateway on port 0, real upstreams, real
# clients), then the end-to-end scripts in scripts/e2e/: a real gRPC server
# and client (Python grpcio) and the Autobahn WebSocket cases, through the
# gateway. Those install their Python packages from PyPI into
# target/e2e-venv on the first run.
#
#   scripts/test.sh            # all tests and the end-to-end scripts
#   scripts/test.sh reload     # only Rust tests whose name matches "reload"
#   PORTCULLIS_E2E=0 scripts/test.sh   # Rust tests only
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, as "command:package".
NEEDS="kill:procps curl:curl redis-server:redis-server redis-cli:redis-tools etcd:etcd-server"

missing=()
for pair in $NEEDS; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "test: needs the Rust toolchain (https://rustup.rs)" >&2; exit 2; }
cargo test --locked -- "$@"

# The end-to-end scripts run the gateway binary that `cargo test` just built.
if [ $# -eq 0 ] && [ "${PORTCULLIS_E2E:-1}" != 0 ]; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "test: installing python3-venv" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  export PORTCULLIS_BIN=target/debug/portcullis
  for e2e in scripts/e2e/grpc.sh scripts/e2e/websocket.sh; do
    echo "== $e2e" >&2
    "$e2e"
  done
fi
