#!/usr/bin/env bash
# Checks manifold with a client generated from Argo CD's own protos.
# Not part of the test suite: it needs source checkouts that are not in this
# repository (Argo CD, Kubernetes' api, apimachinery and
# apiextensions-apiserver, for the proto files) and a directory-app example
# repository such as argoproj/argocd-example-apps.
#
# usage: run.sh ARGO_CD_GITDIR API_GITDIR APIMACHINERY_GITDIR APIEXT_GITDIR EXAMPLE_REPO_URL
# (the first four are git directories; their HEAD's proto files are used)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; root="$here/../.."
argo=$1 api=$2 machinery=$3 apiext=$4 example=$5
work="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
put() { mkdir -p "$work/inc/$(dirname "$2")"; git --git-dir="$1" show "HEAD:$3" > "$work/inc/$2"; }
put "$argo" github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1/generated.proto pkg/apis/application/v1alpha1/generated.proto
put "$argo" reposerver/repository/repository.proto reposerver/repository/repository.proto
for p in pkg/apis/meta/v1 pkg/runtime pkg/runtime/schema pkg/util/intstr pkg/api/resource; do
  put "$machinery" "k8s.io/apimachinery/$p/generated.proto" "$p/generated.proto"
done
put "$api" k8s.io/api/core/v1/generated.proto core/v1/generated.proto
put "$apiext" k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1/generated.proto pkg/apis/apiextensions/v1/generated.proto
python3 -m venv "$work/venv" && "$work/venv/bin/pip" install -q grpcio grpcio-tools
mkdir "$work/gen"
(cd "$work/inc" && "$work/venv/bin/python" -m grpc_tools.protoc -I . --python_out="$work/gen" --grpc_python_out="$work/gen" \
  $(find . -name '*.proto' | sed 's|^\./||') 2>/dev/null)
sha="$(git ls-remote "$example" HEAD | cut -f1)"
(cd "$root" && cargo build --release --locked -q)
for mode in plaintext tls; do
  flags=(); [[ $mode == plaintext ]] && flags=(--disable-tls)
  "$root/target/release/manifold" serve --address 127.0.0.1 --port 18081 --metrics-port 18084 --logformat text "${flags[@]}" 2>"$work/server-$mode.log" &
  pid=$!
  for _ in $(seq 100); do grep -q "manifold is serving" "$work/server-$mode.log" && break; sleep 0.1; done
  tls=(); [[ $mode == tls ]] && tls=(--tls)
  "$work/venv/bin/python" "$here/check.py" "$work/gen" 127.0.0.1:18081 "$example" "$sha" "${tls[@]}"
  kill -TERM $pid; wait $pid
done
