#!/usr/bin/env bash
# Runs the whole Portcullis test suite from a fresh machine: installs what
# the tests need from Debian's packages when it is missing, then runs every
# unit and integration test (real gateway on port 0, real upstreams, real
# clients).
#
#   scripts/test.sh            # all tests
#   scripts/test.sh reload     # only tests whose name matches "reload"
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, as "command:package".
NEEDS="kill:procps redis-server:redis-server redis-cli:redis-tools etcd:etcd-server"

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
exec cargo test --locked -- "$@"
