#!/usr/bin/env bash
# Conformance check of manifold's GenerateManifest against an independent
# oracle of Argo CD's repo-server, on the public example apps of
# argoproj/argocd-example-apps (guestbook, helm-guestbook, kustomize-guestbook,
# jsonnet-guestbook(-tla), helm-hooks, sync-waves, blue-green, apps, sock-shop,
# pre-post-sync; helm-dependency cannot be rendered offline, as its chart
# dependency must be downloaded from https://charts.helm.sh/stable, so for it
# only the failure of both is checked).
#
# The oracle (oracle.py) runs helm/kustomize/go-jsonnet itself with the
# command lines Argo CD's repo-server would use, on its own checkout of the
# example repository, and post-processes and serializes the output like the
# repo-server (tracking label/annotation, list flattening, Go encoding/json).
# check.py asks manifold over gRPC (a client generated from Argo CD's own
# protos) and compares manifests (exact strings, same order), sourceType,
# commands and revision; it prints a unified diff of the first mismatch of
# each failing case.
#
# Not part of the test suite: it needs source checkouts that are not in this
# repository (Argo CD, Kubernetes' api, apimachinery and
# apiextensions-apiserver, for the proto files) and the example repository.
#
# usage: run.sh ARGO_CD_GITDIR API_GITDIR APIMACHINERY_GITDIR APIEXT_GITDIR EXAMPLE_REPO_URL [CASE...]
#   (the first four are git directories; their HEAD's proto files are used;
#    CASE names restrict the run to those cases, see check.py --list)
# e.g.
#   scripts/example-apps-check/run.sh /work/.mirror/argoproj+argo-cd/repo \
#     /work/.mirror/kubernetes+api/repo /work/.mirror/kubernetes+apimachinery/repo \
#     /work/.mirror/kubernetes+apiextensions-apiserver/repo \
#     file:///work/.mirror/argoproj+argocd-example-apps/repo
# environment:
#   MANIFOLD_BIN   use this manifold binary instead of building one with
#                  `cargo build --release --locked`
#   KEEP_WORK=1    keep the scratch directory (venv, generated code, logs)
# helm, kustomize and kubectl are taken from .tools/bin (scripts/install-tools.sh).
# Exit status: 0 when every case matches, 1 on any mismatch, 2 on setup errors.
set -euo pipefail
[[ $# -ge 5 ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"; root="$(cd "$here/../.." && pwd)"
argo=$1 api=$2 machinery=$3 apiext=$4 example=$5; shift 5
export PATH="$root/.tools/bin:$PATH" PYTHONDONTWRITEBYTECODE=1
for tool in helm kustomize kubectl git python3; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (run scripts/install-tools.sh)" >&2; exit 2; }
done

work="$(mktemp -d)"
cleanup() {
  [[ -n "${server_pid:-}" ]] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  if [[ "${KEEP_WORK:-}" == 1 ]]; then echo "scratch kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== protos and Python client"
put() { mkdir -p "$work/inc/$(dirname "$2")"; git --git-dir="$1" show "HEAD:$3" > "$work/inc/$2"; }
put "$argo" github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1/generated.proto pkg/apis/application/v1alpha1/generated.proto
put "$argo" reposerver/repository/repository.proto reposerver/repository/repository.proto
for p in pkg/apis/meta/v1 pkg/runtime pkg/runtime/schema pkg/util/intstr pkg/api/resource; do
  put "$machinery" "k8s.io/apimachinery/$p/generated.proto" "$p/generated.proto"
done
put "$api" k8s.io/api/core/v1/generated.proto core/v1/generated.proto
put "$apiext" k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1/generated.proto pkg/apis/apiextensions/v1/generated.proto
python3 -m venv "$work/venv"
# gojsonnet: Python bindings of go-jsonnet, the Jsonnet implementation Argo CD uses.
"$work/venv/bin/pip" install -q grpcio grpcio-tools pyyaml gojsonnet
mkdir "$work/gen"
(cd "$work/inc" && "$work/venv/bin/python" -m grpc_tools.protoc -I . --python_out="$work/gen" --grpc_python_out="$work/gen" \
  $(find . -name '*.proto' | sed 's|^\./||') 2>/dev/null)

echo "== oracle checkout of $example"
sha="$(git ls-remote "$example" HEAD | cut -f1)"
[[ -n "$sha" ]] || { echo "run.sh: cannot resolve HEAD of $example" >&2; exit 2; }
git clone -q --no-checkout "$example" "$work/checkout"
git -C "$work/checkout" -c advice.detachedHead=false checkout -q --force "$sha"

if [[ -n "${MANIFOLD_BIN:-}" ]]; then
  bin="$MANIFOLD_BIN"
else
  echo "== cargo build --release --locked"
  (cd "$root" && cargo build --release --locked -q)
  bin="$root/target/release/manifold"
fi

read -r port metrics_port < <("$work/venv/bin/python" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
echo "== manifold on 127.0.0.1:$port (log: $work/server.log)"
TMPDIR="$work" "$bin" serve --disable-tls --address 127.0.0.1 --port "$port" --metrics-port "$metrics_port" \
  --logformat text >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 200); do grep -q "manifold is serving" "$work/server.log" && break; sleep 0.1; done
grep -q "manifold is serving" "$work/server.log" || { echo "run.sh: manifold did not start:" >&2; cat "$work/server.log" >&2; exit 2; }

status=0
"$work/venv/bin/python" "$here/check.py" "$work/gen" "127.0.0.1:$port" "$example" "$sha" "$work/checkout" "$@" || status=$?
if [[ $status -ne 0 ]]; then
  echo "-- last lines of the manifold log:"; tail -n 20 "$work/server.log"
fi
exit "$status"
