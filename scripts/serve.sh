#!/usr/bin/env bash
# Builds manifold and starts it like argocd-repo-server: gRPC on 8081 (TLS
# with a self-signed certificate unless one is mounted), health on 8084,
# in-process caching only (no Redis needed). Extra arguments go to
# `manifold serve`, e.g. `scripts/serve.sh --disable-tls --logformat text`.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

scripts/install-tools.sh --no-redis
export PATH="$PWD/.tools/bin:$PATH"
cargo build --release --locked
exec target/release/manifold serve "$@"
