#!/usr/bin/env python3
"""Compares manifold's GenerateManifest with the oracle (oracle.py) on the
example apps of argoproj/argocd-example-apps.

usage: check.py GEN_DIR HOST:PORT REPO_URL EXPECTED_SHA CHECKOUT [CASE...]
       check.py --list

GEN_DIR holds the Python code grpc_tools.protoc generated from Argo CD's
reposerver/repository/repository.proto and its imports; CHECKOUT is a
checkout of REPO_URL at EXPECTED_SHA that the oracle copies for each case
(see run.sh). Every case is asked three times: with noCache, then twice
without (a fresh generation, then normally a cache hit); each answer must
match the oracle: manifests (exact strings, same order), sourceType,
commands and revision.
"""
import difflib
import json
import os
import re
import shutil
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import oracle  # noqa: E402

LABEL_KEY = "app.kubernetes.io/instance"

# Each case: a GenerateManifest request. "source" is the ApplicationSource in
# Argo CD's JSON shape (repoURL/targetRevision are filled in); everything else
# is a ManifestRequest field. Argo CD iterates Go maps for --set, --set-string,
# --set-file and for kustomize labels/annotations, so those arguments are
# compared as sets (see canonical_command); parameters never overlap, so the
# rendered result does not depend on their order.
CASES = [
    # --- directory apps ---
    dict(name="guestbook", appName="guestbook", namespace="demo", trackingMethod="annotation",
         source={"path": "guestbook"}),
    dict(name="guestbook-label", appName="guestbook", namespace="demo", trackingMethod="label",
         source={"path": "guestbook"}),
    dict(name="guestbook-annotation+label-long-name", namespace="demo", trackingMethod="annotation+label",
         appName="team-a_" + "guestbook-with-a-rather-long-application-name-for-labels-0123456-x",
         installationID="install-7", source={"path": "guestbook"}),
    dict(name="guestbook-no-tracking-method", appName="guestbook", namespace="demo", trackingMethod="",
         source={"path": "guestbook", "directory": {}}),
    dict(name="guestbook-no-app-label-key", appName="guestbook", namespace="demo", trackingMethod="annotation",
         appLabelKey="", source={"path": "guestbook"}),
    dict(name="repo-root", appName="root", namespace="demo", trackingMethod="annotation", source={"path": "."}),
    # Helm templates read as plain YAML: Argo CD refuses them (they look like manifests but do not parse)
    dict(name="helm-templates-as-directory", appName="t", namespace="demo", trackingMethod="annotation",
         source={"path": "helm-guestbook/templates"}),
    dict(name="helm-hooks", appName="helm-hooks", namespace="demo", trackingMethod="annotation",
         source={"path": "helm-hooks"}),
    dict(name="sync-waves", appName="sync-waves", namespace="demo", trackingMethod="annotation",
         source={"path": "sync-waves"}),
    # the legacy label also goes onto the pod templates of ReplicaSets and Jobs
    dict(name="sync-waves-legacy-label", appName="sync-waves", namespace="demo", trackingMethod="label",
         appLabelKey="applications.argoproj.io/app-name", source={"path": "sync-waves"}),
    dict(name="sock-shop-base", appName="sock-shop", namespace="sock-shop", trackingMethod="annotation",
         source={"path": "sock-shop/base"}),
    dict(name="sock-shop-directory-recurse-include", appName="sock-shop", namespace="sock-shop",
         trackingMethod="label",
         source={"path": "sock-shop", "directory": {"recurse": True, "include": "{base/carts*,*/front-end-*}",
                                                    "exclude": "*-svc.yaml"}}),
    dict(name="sock-shop-directory-recurse", appName="sock-shop", namespace="sock-shop",
         trackingMethod="annotation", source={"path": "sock-shop", "directory": {"recurse": True}}),
    # apps of other kinds read as plain directories (explicitly, or because their tool is disabled)
    dict(name="kustomize-guestbook-as-directory", appName="kg", namespace="demo", trackingMethod="annotation",
         source={"path": "kustomize-guestbook", "directory": {}}),
    dict(name="kustomize-guestbook-kustomize-disabled", appName="kg", namespace="demo", trackingMethod="label",
         enabledSourceTypes={"Kustomize": False},
         source={"path": "kustomize-guestbook", "kustomize": {"namePrefix": "ignored-"}}),
    dict(name="pre-post-sync-as-directory", appName="pps", namespace="demo", trackingMethod="annotation",
         source={"path": "pre-post-sync", "directory": {"recurse": True}}),
    dict(name="helm-guestbook-helm-disabled", appName="hg", namespace="demo", trackingMethod="annotation",
         enabledSourceTypes={"Helm": False, "Kustomize": True}, source={"path": "helm-guestbook"}),
    # --- jsonnet (directory apps with .jsonnet files) ---
    dict(name="jsonnet-guestbook-directory-disabled", appName="jg", namespace="demo", trackingMethod="annotation",
         enabledSourceTypes={"Directory": False}, source={"path": "jsonnet-guestbook"}),
    dict(name="jsonnet-guestbook", appName="jsonnet-guestbook", namespace="demo", trackingMethod="annotation",
         source={"path": "jsonnet-guestbook",
                 "directory": {"jsonnet": {"extVars": [{"name": "unused", "value": "$ARGOCD_APP_NAME"}]}}}),
    dict(name="jsonnet-guestbook-label", appName="jsonnet-guestbook", namespace="demo", trackingMethod="label",
         source={"path": "jsonnet-guestbook"}),
    dict(name="jsonnet-guestbook-tla", appName="jsonnet-tla", namespace="demo", trackingMethod="annotation",
         source={"path": "jsonnet-guestbook-tla", "directory": {"jsonnet": {"tlas": [
             {"name": "name", "value": "${ARGOCD_APP_NAME}-ui"},
             {"name": "replicas", "value": "2 + 1", "code": True},
             {"name": "image", "value": "example.com/gb-frontend:<$ARGOCD_APP_REVISION_SHORT>&"},
             {"name": "containerPort", "value": "8080", "code": True},
         ], "libs": ["jsonnet-guestbook"]}}}),
    # --- helm ---
    dict(name="helm-guestbook", appName="team-a_helm-guestbook", namespace="demo", trackingMethod="annotation",
         kubeVersion="1.30.4+k3s1", apiVersions=["v1", "apps/v1"],
         source={"path": "helm-guestbook", "helm": {
             "valueFiles": ["values-production.yaml"],
             "parameters": [{"name": "replicaCount", "value": "2"}]}}),
    dict(name="helm-guestbook-label", appName="helm-guestbook", namespace="demo", trackingMethod="label",
         source={"path": "helm-guestbook"}),
    dict(name="helm-guestbook-quoting-and-files", appName="helm-guestbook", namespace="demo",
         trackingMethod="label",
         source={"path": "helm-guestbook", "helm": {
             "valueFiles": ["values*.yaml", "values.yaml", "no-such-values.yaml"], "ignoreMissingValueFiles": True,
             "parameters": [{"name": "image.tag", "value": "v5 with spaces", "forceString": True}],
             "fileParameters": [{"name": "podAnnotations", "path": "values-production.yaml"}]}}),
    dict(name="helm-guestbook-overrides", appName="hg", namespace="demo", trackingMethod="annotation",
         source={"path": "helm-guestbook", "helm": {
             "releaseName": "gb", "namespace": "web", "skipCrds": True, "kubeVersion": "v1.29.0",
             "valueFiles": ["values.yaml", "/helm-guestbook/values-production.yaml"],
             "parameters": [{"name": "image.pullPolicy", "value": "Always,IfNotPresent"},
                            {"name": "image.tag", "value": "${ARGOCD_APP_REVISION_SHORT}", "forceString": True}],
             "values": "image:\n  repository: example.com/<gb>&frontend\nservice:\n  port: 8080\n"}}),
    dict(name="helm-guestbook-many-parameters", appName="helm-guestbook", namespace="demo",
         trackingMethod="annotation",
         source={"path": "helm-guestbook", "helm": {"parameters": [
             {"name": "replicaCount", "value": "3"}, {"name": "service.port", "value": "8080"},
             {"name": "image.tag", "value": "v7", "forceString": True},
             {"name": "image.repository", "value": "example.com/gb", "forceString": True},
             {"name": "containerPort", "value": "8081"}]}}),
    dict(name="helm-bad-kube-version", appName="hg", namespace="demo", trackingMethod="annotation",
         kubeVersion="banana", source={"path": "helm-guestbook"}),
    dict(name="blue-green", appName="blue-green", namespace="demo", trackingMethod="annotation",
         source={"path": "blue-green", "helm": {"releaseName": "blue-green"}}),
    dict(name="apps", appName="apps", namespace="argocd", trackingMethod="annotation+label",
         source={"path": "apps"}),
    # --- kustomize ---
    dict(name="kustomize-guestbook", appName="kustomize-guestbook", namespace="demo", trackingMethod="annotation",
         source={"path": "kustomize-guestbook", "kustomize": {
             "namePrefix": "staging-",
             "images": ["gcr.io/google-samples/gb-frontend=example.com/gb-frontend:${ARGOCD_APP_REVISION_SHORT}"],
             "commonLabels": {"env": "staging"}}}),
    dict(name="kustomize-guestbook-label", appName="kustomize-guestbook", namespace="demo", trackingMethod="label",
         source={"path": "kustomize-guestbook", "kustomize": {
             "namePrefix": "staging-", "images": ["gcr.io/google-samples/gb-frontend:v6"],
             "commonLabels": {"env": "staging"}}}),
    dict(name="kustomize-guestbook-more", appName="kg", namespace="demo", trackingMethod="annotation",
         source={"path": "kustomize-guestbook", "kustomize": {
             "nameSuffix": "-v2", "replicas": [{"name": "guestbook-ui", "count": 3}],
             "commonLabels": {"tier": "web"}, "forceCommonLabels": True, "labelWithoutSelector": True,
             "labelIncludeTemplates": True,
             "commonAnnotations": {"revision": "rev-$ARGOCD_APP_REVISION_SHORT"},
             "commonAnnotationsEnvsubst": True, "namespace": "kns"}}),
    dict(name="kustomize-guestbook-many-labels", appName="kg", namespace="demo", trackingMethod="annotation",
         source={"path": "kustomize-guestbook", "kustomize": {
             "commonLabels": {"env": "staging", "team": "web", "app.kubernetes.io/part-of": "guestbook"},
             "commonAnnotations": {"owner": "team-a", "rev": "$ARGOCD_APP_REVISION_SHORT"},
             "images": ["gcr.io/google-samples/gb-frontend@sha256:" + "0" * 64]}}),
    dict(name="kustomize-guestbook-plain", appName="kustomize-guestbook", namespace="demo",
         trackingMethod="annotation", source={"path": "kustomize-guestbook"}),
    dict(name="kustomize-guestbook-build-options", appName="kustomize-guestbook", namespace="demo",
         trackingMethod="annotation", kubeVersion="v1.29.2", apiVersions=["v1"],
         kustomizeOptions={"buildOptions": "--enable-helm"}, source={"path": "kustomize-guestbook"}),
    dict(name="pre-post-sync", appName="pre-post-sync", namespace="demo", trackingMethod="annotation",
         source={"path": "pre-post-sync"}),
    dict(name="pre-post-sync-prefix", appName="pre-post-sync", namespace="demo", trackingMethod="label",
         source={"path": "pre-post-sync", "kustomize": {"namePrefix": "pps-"}}),
    dict(name="sock-shop", appName="sock-shop", namespace="sock-shop", trackingMethod="annotation",
         source={"path": "sock-shop"}),
]
# helm-dependency cannot be rendered here: `helm dependency build` must
# download the wordpress chart from https://charts.helm.sh/stable, and this
# machine reaches no network but package registries. It is only checked that
# both fail (the oracle does not model `helm dependency build`; Argo CD's
# error would come from it).
CASES.append(dict(name="helm-dependency-offline", appName="wp", namespace="demo", trackingMethod="annotation",
                  source={"path": "helm-dependency"}))


def to_proto_source(source, repo_url):
    """ApplicationSource JSON shape -> ParseDict input for the generated proto."""
    out = json.loads(json.dumps(source))
    out["repoURL"] = repo_url
    out.setdefault("targetRevision", "HEAD")
    for r in (out.get("kustomize") or {}).get("replicas") or []:
        r["count"] = {"type": 0, "intVal": int(r["count"])}
    return out


def full_case(case, repo_url):
    c = dict(case)
    c.setdefault("appLabelKey", LABEL_KEY)
    c["repoURL"] = repo_url
    c["source"] = dict(case["source"], repoURL=repo_url, targetRevision="HEAD")
    c["projectName"] = "default"
    return c


def _tokens(command):
    return re.findall(r'"(?:\\.|[^"\\])*"|\S+', command)


def canonical_command(command):
    """Sorts the arguments whose order comes from a Go map in Argo CD: each
    run of --set / --set-string / --set-file pairs in helm commands, and the
    k:v arguments of `kustomize edit add label|annotation`."""
    t = _tokens(command)
    if t[:4] in (["kustomize", "edit", "add", "label"], ["kustomize", "edit", "add", "annotation"]):
        flags = [x for x in t[4:] if x.startswith("--")]
        pairs = [x for x in t[4:] if not x.startswith("--")]
        return " ".join(t[:4] + flags + sorted(pairs))
    if t[:2] == ["helm", "template"]:
        out, i = [], 0
        while i < len(t):
            if t[i] in ("--set", "--set-string", "--set-file"):
                flag, group = t[i], []
                while i + 1 < len(t) and t[i] == flag:
                    group.append(t[i + 1])
                    i += 2
                for value in sorted(group):
                    out += [flag, value]
                continue
            out.append(t[i])
            i += 1
        return " ".join(out)
    return command


def pretty(manifest):
    try:
        return json.dumps(json.loads(manifest), indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    except ValueError:
        return [manifest]


def first_mismatch(expected, actual):
    """(description, unified diff lines) of the first difference, or None."""
    expected = dict(expected, commands=[canonical_command(c) for c in expected["commands"]])
    actual = dict(actual, commands=[canonical_command(c) for c in actual["commands"]])
    for field in ("sourceType", "revision", "commands"):
        if expected[field] != actual[field]:
            e = json.dumps(expected[field], indent=1).splitlines() if not isinstance(expected[field], str) \
                else [expected[field]]
            a = json.dumps(actual[field], indent=1).splitlines() if not isinstance(actual[field], str) \
                else [actual[field]]
            return field, list(difflib.unified_diff(e, a, "oracle (Argo CD)", "manifold", lineterm=""))
    em, am = expected["manifests"], actual["manifests"]
    for i in range(max(len(em), len(am))):
        e = em[i] if i < len(em) else None
        a = am[i] if i < len(am) else None
        if e == a:
            continue
        if e is None or a is None:
            names = lambda ms: [f"{json.loads(m).get('kind')}/{json.loads(m).get('metadata', {}).get('name')}"
                                for m in ms]
            return (f"manifests: {len(em)} expected, {len(am)} received",
                    list(difflib.unified_diff(names(em), names(am), "oracle (Argo CD)", "manifold", lineterm="")))
        diff = list(difflib.unified_diff(pretty(e), pretty(a), f"oracle (Argo CD) manifests[{i}]",
                                         f"manifold manifests[{i}]", lineterm=""))
        if not diff:  # same JSON value, different bytes (escaping, number format, key order...)
            pos = next(j for j in range(min(len(e), len(a)) + 1) if j >= min(len(e), len(a)) or e[j] != a[j])
            diff = [f"byte-level difference at offset {pos}:",
                    f"- oracle:   ...{e[max(0, pos - 40):pos + 40]}...",
                    f"+ manifold: ...{a[max(0, pos - 40):pos + 40]}..."]
        return f"manifests[{i}]", diff
    return None


def main():
    if sys.argv[1:2] == ["--list"]:
        print("\n".join(c["name"] for c in CASES))
        return 0
    gen_dir, target, repo_url, expected_sha, checkout = sys.argv[1:6]
    only = set(sys.argv[6:])
    unknown = only - {c["name"] for c in CASES}
    if unknown:
        print(f"unknown cases: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    sys.path.insert(0, gen_dir)
    import grpc
    from google.protobuf import json_format
    from reposerver.repository import repository_pb2 as repo_pb
    from reposerver.repository import repository_pb2_grpc as repo_grpc
    from github.com.argoproj.argo_cd.v3.pkg.apis.application.v1alpha1 import generated_pb2 as v1

    stub = repo_grpc.RepoServerServiceStub(grpc.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 100 * 1024 * 1024)]))

    def ask(case, no_cache):
        source = json_format.ParseDict(to_proto_source(case["source"], repo_url), v1.ApplicationSource())
        req = repo_pb.ManifestRequest(
            repo=v1.Repository(repo=repo_url, type="git"), revision="HEAD", noCache=no_cache,
            appLabelKey=case.get("appLabelKey", LABEL_KEY), appName=case["appName"], namespace=case["namespace"],
            applicationSource=source, trackingMethod=case.get("trackingMethod", ""),
            kubeVersion=case.get("kubeVersion", ""), apiVersions=case.get("apiVersions", []),
            projectName="default", projectSourceRepos=["*"], installationID=case.get("installationID", ""),
            enabledSourceTypes=case.get("enabledSourceTypes", {}))
        if case.get("kustomizeOptions"):
            req.kustomizeOptions.CopyFrom(json_format.ParseDict(case["kustomizeOptions"], v1.KustomizeOptions()))
        res = stub.GenerateManifest(req, timeout=300)
        return {"manifests": list(res.manifests), "sourceType": res.sourceType, "commands": list(res.commands),
                "revision": res.revision}

    results = []
    for case in CASES:
        if only and case["name"] not in only:
            continue
        full = full_case(case, repo_url)
        copy_dir = tempfile.mkdtemp(prefix="oracle-checkout-")
        try:
            root = os.path.join(copy_dir, "repo")
            shutil.copytree(checkout, root, symlinks=True)
            try:
                expected = dict(oracle.generate(root, expected_sha, full), revision=expected_sha)
            except oracle.OracleError as err:
                expected = {"error": str(err)}
        finally:
            shutil.rmtree(copy_dir, ignore_errors=True)

        print(f"{case['name']} ({case['source']['path']}):")
        failure = None
        for attempt, no_cache in (("noCache", True), ("fresh", False), ("cached", False)):
            try:
                actual = ask(case, no_cache)
            except grpc.RpcError as err:
                if "error" in expected:
                    short = lambda text: text.splitlines()[0][:160] if text else ""
                    print(f"  ok   {attempt}: both fail (oracle: {short(expected['error'])}; manifold: "
                          f"{err.code().name}: {short(err.details())})")
                    continue
                failure = (f"{attempt}: manifold failed: {err.code().name}: {err.details()}", [])
                break
            if "error" in expected:
                failure = (f"{attempt}: the oracle expects an error ({expected['error']}), manifold answered "
                           f"{len(actual['manifests'])} manifests", [])
                break
            mismatch = first_mismatch(expected, actual)
            if mismatch:
                failure = (f"{attempt}: {mismatch[0]} differs", mismatch[1])
                break
            if attempt == "noCache":
                kinds = ", ".join(f"{json.loads(m)['kind']}/{json.loads(m)['metadata'].get('name') or '*'}"
                                  for m in actual["manifests"])
                print(f"  ok   {actual['sourceType']}, {len(actual['manifests'])} manifests: {kinds}")
                for c in actual["commands"]:
                    print(f"       $ {c}")
        if failure is None:
            print("  ok   the same after a fresh generation and from the cache")
            results.append((case["name"], True))
        else:
            print(f"  FAIL {failure[0]}")
            for line in failure[1]:
                print("       " + line)
            results.append((case["name"], False))

    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print()
    for name, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
