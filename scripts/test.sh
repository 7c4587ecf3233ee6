#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the real tools (helm,
# kubectl, the kustomize wrapper, redis-server), then checks formatting,
# lints and runs every test. CI=true makes a missing tool fail the run
# instead of skipping.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

scripts/install-tools.sh
export PATH="$PWD/.tools/bin:$PATH"
export CI="${CI:-true}"

# Deployment artifacts: hadolint on the Dockerfile, helm lint and schema
# checks of the chart.
scripts/lint-deploy.sh

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked

# The benchmark harness in quick mode (release build, every scenario at
# small sizes, into target/bench-quick): keeps it working; no timing is
# asserted.
cargo bench --bench report --locked -- --quick
