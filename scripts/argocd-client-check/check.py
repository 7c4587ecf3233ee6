#!/usr/bin/env python3
"""Talks to a running manifold with a client generated from Argo CD's own
repository.proto, and checks GenerateManifest for every directory app of a
repository plus the documented error cases.

usage: check.py GEN_DIR HOST:PORT REPO_URL EXPECTED_SHA [--tls]

GEN_DIR holds the Python code grpc_tools.protoc generated from Argo CD's
reposerver/repository/repository.proto and its imports (see run.sh).
"""
import json
import ssl
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from reposerver.repository import repository_pb2 as repo_pb  # noqa: E402
from reposerver.repository import repository_pb2_grpc as repo_grpc  # noqa: E402
from github.com.argoproj.argo_cd.v3.pkg.apis.application.v1alpha1 import generated_pb2 as v1  # noqa: E402

target, repo_url, expected_sha = sys.argv[2], sys.argv[3], sys.argv[4]
use_tls = "--tls" in sys.argv

if use_tls:
    host, port = target.rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port))).encode()
    credentials = grpc.ssl_channel_credentials(root_certificates=pem)
    channel = grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", "localhost")])
else:
    channel = grpc.insecure_channel(target)
stub = repo_grpc.RepoServerServiceStub(channel)


def request(path, revision="HEAD"):
    return repo_pb.ManifestRequest(
        repo=v1.Repository(repo=repo_url, type="git"),
        revision=revision,
        appLabelKey="app.kubernetes.io/instance",
        appName="example",
        namespace="demo",
        applicationSource=v1.ApplicationSource(repoURL=repo_url, path=path, targetRevision=revision),
        trackingMethod="annotation",
    )


failures = 0


def name(o):
    return o["metadata"].get("name") or o["metadata"].get("generateName", "") + "*"


def check(condition, message):
    global failures
    print(("  ok   " if condition else "  FAIL ") + message)
    failures += 0 if condition else 1


# None: a source type not built yet, which must answer UNIMPLEMENTED.
for path, expect_type in [("guestbook", "Directory"), ("sync-waves", "Directory"), ("sock-shop/base", "Directory"),
                          ("pre-post-sync", None), ("helm-guestbook", None), ("kustomize-guestbook", None)]:
    print(f"{path}:")
    try:
        response = stub.GenerateManifest(request(path))
    except grpc.RpcError as err:
        check(expect_type is None and err.code() == grpc.StatusCode.UNIMPLEMENTED,
              f"{err.code().name}: {err.details()}")
        continue
    objects = [json.loads(m) for m in response.manifests]
    check(response.revision == expected_sha, f"revision {response.revision}")
    check(response.sourceType == expect_type, f"sourceType {response.sourceType}")
    check(len(objects) > 0, f"{len(objects)} manifests: " + ", ".join(f"{o['kind']}/{name(o)}" for o in objects))
    for o in objects:
        ns = o["metadata"].get("namespace") or "demo"
        group = o["apiVersion"].rsplit("/", 1)[0] if "/" in o["apiVersion"] else ""
        want = f"example:{group}/{o['kind']}:{ns}/{o['metadata'].get('name', '')}"
        got = o["metadata"].get("annotations", {}).get("argocd.argoproj.io/tracking-id")
        check(got == want, f"tracking-id {got}")

print("errors:")
for path, revision, code, text in [
    ("..", "HEAD", grpc.StatusCode.INVALID_ARGUMENT, "app path outside root"),
    ("/etc", "HEAD", grpc.StatusCode.INVALID_ARGUMENT, "app path is absolute"),
    ("no-such-app", "HEAD", grpc.StatusCode.INVALID_ARGUMENT, "app path does not exist"),
    ("guestbook", "no-such-branch", grpc.StatusCode.NOT_FOUND, "'no-such-branch'"),
]:
    try:
        stub.GenerateManifest(request(path, revision))
        check(False, f"{path}@{revision} should fail")
    except grpc.RpcError as err:
        check(err.code() == code and text in err.details(), f"{path}@{revision}: {err.code().name}: {err.details()}")

print("FAILED" if failures else "PASSED", f"({'TLS' if use_tls else 'plaintext'})")
sys.exit(1 if failures else 0)
