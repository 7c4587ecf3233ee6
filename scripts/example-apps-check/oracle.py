#!/usr/bin/env python3
"""Oracle: what Argo CD's repo-server would answer to GenerateManifest.

Written from Argo CD's behaviour (reposerver/repository/repository.go,
util/helm/cmd.go, util/kustomize/kustomize.go, util/argo/resource_tracking.go,
util/kube/kube.go, gitops-engine/pkg/utils/kube/kube.go) and from the Go
libraries it relies on (k8s.io/apimachinery's YAML-or-JSON decoder and
unstructured JSON scheme, sigs.k8s.io/yaml over go-yaml v2, encoding/json).
It does not use any of manifold's code.

It runs the real tools the way the repo-server does (`helm template` in the
app directory, `kustomize build <app dir>` from the checkout root, go-jsonnet
for .jsonnet files) on a fresh checkout, then post-processes the output as the
repo-server does and serializes each object as Go's encoding/json would.

The one deliberate deviation: `kustomize edit ...` is not available on this
machine (the `kustomize` on PATH is a shim over `kubectl kustomize`), so the
documented effect of each edit command is applied to the kustomization file
in Python (see KustomizationEditor). The command lines reported in
`commands` are still the ones Argo CD would have run.

A case (see check.py) is a dict:
  {"name": ..., "appName": ..., "namespace": ..., "appLabelKey": ...,
   "trackingMethod": ..., "installationID": ..., "kubeVersion": ...,
   "apiVersions": [...], "kustomizeOptions": {"buildOptions": ...},
   "enabledSourceTypes": {"Helm": false, ...},
   "source": <ApplicationSource in Argo CD's JSON shape>}

usage (stand-alone, for debugging):
  oracle.py CHECKOUT_DIR REVISION CASE_JSON_FILE
prints {"manifests": [...], "sourceType": ..., "commands": [...]} as JSON.
"""
import base64
import copy
import glob
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from decimal import Decimal

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner


class OracleError(Exception):
    """Argo CD would have answered with an error."""


# ---------------------------------------------------------------------------
# Go's encoding/json (json.Marshal of map[string]interface{})
# ---------------------------------------------------------------------------

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def go_float(f):
    """strconv.AppendFloat(f, 'f' or 'e', -1, 64) as encoding/json uses it."""
    if math.isnan(f) or math.isinf(f):
        raise OracleError(f"json: unsupported value: {f!r}")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    a = abs(f)
    d = Decimal(repr(f))  # repr is the shortest round-tripping form, like Go's -1 precision
    if 1e-6 <= a < 1e21:
        s = format(d, "f")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return s
    sign, digits, exp = d.as_tuple()
    digits = list(digits)
    while len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exp += 1
    e10 = exp + len(digits) - 1
    mant = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    es = f"{abs(e10):02d}"
    if e10 < 0 and es.startswith("0"):  # encoding/json turns e-07 into e-7
        es = es[1:]
    return ("-" if sign else "") + mant + "e" + ("-" if e10 < 0 else "+") + es


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def go_string(s):
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif c < 0x20 or ch in "<>&" or c in (0x2028, 0x2029):
            out.append("\\u%04x" % c)
        elif 0xD800 <= c <= 0xDFFF:  # cannot be valid UTF-8: Go writes U+FFFD
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_json(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        if INT64_MIN <= v <= INT64_MAX:
            return str(v)
        return go_float(float(v))
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, str):
        return go_string(v)
    if isinstance(v, list):
        return "[" + ",".join(go_json(x) for x in v) + "]"
    if isinstance(v, dict):
        # Go sorts map keys by their UTF-8 bytes; code point order is the same.
        return "{" + ",".join(go_string(k) + ":" + go_json(v[k]) for k in sorted(v)) + "}"
    raise OracleError(f"cannot encode {type(v)}")


# ---------------------------------------------------------------------------
# Numbers after k8s.io/apimachinery/pkg/util/json (UseNumber, then int64 if the
# literal parses as one, else float64)
# ---------------------------------------------------------------------------

def k8s_number(v):
    """A number as it ends up in an Unstructured object after a JSON round trip."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v if INT64_MIN <= v <= INT64_MAX else float(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise OracleError("json: unsupported value: NaN/Inf")
        # encoding/json writes an integral float without a fraction (e.g. 3),
        # which then parses back as an int64 when it fits.
        text = go_float(v)
        if re.fullmatch(r"-?\d+", text) and INT64_MIN <= int(text) <= INT64_MAX:
            return int(text)
        return v
    return v


def normalize(v):
    if isinstance(v, dict):
        return {k: normalize(x) for k, x in v.items()}
    if isinstance(v, list):
        return [normalize(x) for x in v]
    if isinstance(v, (int, float)):
        return k8s_number(v)
    return v


def go_json_loads(text):
    """encoding/json + util/json number conversion."""
    def parse_int(s):
        n = int(s)
        return n if INT64_MIN <= n <= INT64_MAX else float(s)

    return json.loads(text, parse_int=parse_int, parse_float=float,
                      parse_constant=lambda c: (_ for _ in ()).throw(OracleError(f"invalid JSON literal {c}")))


# ---------------------------------------------------------------------------
# YAML as go-yaml v2 (through sigs.k8s.io/yaml) reads it
# ---------------------------------------------------------------------------

PLAIN = "!<oracle-plain>"
STR_TAG = "tag:yaml.org,2002:str"
_TAG = "tag:yaml.org,2002:"


class _PlainMarkingResolver(BaseResolver):
    """Leaves untagged plain scalars for go-yaml v2's own resolution rules."""

    def resolve(self, kind, value, implicit):
        if kind is ScalarNode and implicit[0]:
            return PLAIN
        return super().resolve(kind, value, implicit)


class _NodeLoader(Reader, Scanner, Parser, Composer, _PlainMarkingResolver):
    def __init__(self, stream):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _PlainMarkingResolver.__init__(self)

    def scan_to_next_token(self):
        # PyYAML's scanner with libyaml's (and so go-yaml's) rule for tabs:
        # between tokens a tab is white space too when inside a flow
        # collection or when a simple key is not allowed (e.g. after a value,
        # as in "apiVersion: v1<TAB>").
        if self.index == 0 and self.peek() == "\ufeff":
            self.forward()
        found = False
        while not found:
            while self.peek() == " " or (self.peek() == "\t" and (self.flow_level or not self.allow_simple_key)):
                self.forward()
            if self.peek() == "#":
                while self.peek() not in "\0\r\n\x85\u2028\u2029":
                    self.forward()
            if self.scan_line_break():
                if not self.flow_level:
                    self.allow_simple_key = True
            else:
                found = True


_GO_BOOL_NULL = {}
for _words, _value in [(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
                       (("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
                       (("", "~", "null", "Null", "NULL"), None)]:
    for _w in _words:
        _GO_BOOL_NULL[_w] = _value
_GO_SPECIAL_FLOATS = {".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan,
                      ".inf": math.inf, ".Inf": math.inf, ".INF": math.inf,
                      "+.inf": math.inf, "+.Inf": math.inf, "+.INF": math.inf,
                      "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf}
_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_GO_DEC_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _go_parse_uint(s, base=0):
    """strconv.ParseUint(s, base, 64); returns (value, error) with error in {None, 'syntax', 'range'}."""
    if s == "":
        return None, "syntax"
    if base == 0:
        base = 10
        if s[0] == "0":
            if len(s) >= 3 and s[1] in "xX":
                base, s = 16, s[2:]
            elif len(s) >= 3 and s[1] in "oO":
                base, s = 8, s[2:]
            elif len(s) >= 3 and s[1] in "bB":
                base, s = 2, s[2:]
            else:
                base, s = 8, s[1:]
                if s == "":
                    return 0, None
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"[:base]
    if s == "" or any(c.lower() not in digits for c in s):
        return None, "syntax"
    n = int(s, base)
    if n > (1 << 64) - 1:
        return None, "range"
    return n, None


def _go_parse_int(s):
    neg = False
    body = s
    if body[:1] in "+-":
        neg = body[0] == "-"
        body = body[1:]
    n, err = _go_parse_uint(body)
    if err:
        return None, err
    n = -n if neg else n
    if not INT64_MIN <= n <= INT64_MAX:
        return None, "range"
    return n, None


def _go_parse_float(s):
    if not _GO_DEC_FLOAT.fullmatch(s):
        return None
    f = float(s)
    return None if math.isinf(f) else f


def go_yaml_resolve(value):
    """go-yaml v2 resolve() for an untagged plain scalar, as decoded into interface{}."""
    first = value[:1]
    if first == "" or first in "+-0123456789yYnNtTfFoO~.":
        if value in _GO_BOOL_NULL:
            return _GO_BOOL_NULL[value]
        if value in _GO_SPECIAL_FLOATS:
            raise OracleError(f"json: unsupported value {value} (YAML special float)")
        if first == ".":
            f = _go_parse_float(value)
            if f is not None:
                return f
        elif first in "+-0123456789":
            # (timestamps resolve to their text when decoding into interface{})
            plain = value.replace("_", "")
            n, _ = _go_parse_int(plain)
            if n is not None:
                return n
            n, err = _go_parse_uint(plain)
            if n is not None:
                return n
            if _YAML_STYLE_FLOAT.fullmatch(plain):
                f = _go_parse_float(plain)
                if f is not None:
                    return f
            if err == "range":
                try:
                    return int(plain, 0)
                except ValueError:
                    pass
    return value


def _go_float32_g(f):
    """strconv.FormatFloat(f, 'g', -1, 32), used for float map keys."""
    f32 = struct.unpack("f", struct.pack("f", f))[0]
    for p in range(1, 10):
        s = "%.*g" % (p, f32)
        if struct.unpack("f", struct.pack("f", float(s)))[0] == f32:
            break
    if "e" in s:
        m, e = s.split("e")
        s = m + "e" + e[0] + e[1:].lstrip("0").rjust(2, "0")
    return s


def _key_string(k):
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, str):
        return k
    if isinstance(k, int):
        return str(k)
    if isinstance(k, float):
        return _go_float32_g(k)
    raise OracleError(f"error converting YAML to JSON: unsupported map key {k!r}")


def _convert_node(node):
    if isinstance(node, ScalarNode):
        tag, value = node.tag, node.value
        if tag == PLAIN:
            return go_yaml_resolve(value)
        if tag == STR_TAG:
            return value
        if tag in (_TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"):
            r = go_yaml_resolve(value)
            kind = tag[len(_TAG):]
            if kind == "float" and isinstance(r, int) and not isinstance(r, bool):
                return float(r)
            ok = {"int": isinstance(r, int) and not isinstance(r, bool), "float": isinstance(r, float),
                  "bool": isinstance(r, bool), "null": r is None}[kind]
            if not ok:
                raise OracleError(f"cannot decode `{value}` as !!{kind}")
            return r
        if tag == _TAG + "binary":
            return base64.b64decode(value).decode("utf-8", "replace")
        return value  # any other tag: go-yaml v2 keeps the text
    if isinstance(node, SequenceNode):
        return [_convert_node(c) for c in node.value]
    if isinstance(node, MappingNode):
        out = {}
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.tag == PLAIN and k.value == "<<":
                _merge_into(out, v)
                continue
            key = _convert_node(k)
            if isinstance(key, (list, dict)) or key is None:
                raise OracleError(f"error converting YAML to JSON: unsupported map key {key!r}")
            out[_key_string(key)] = _convert_node(v)
        return out
    raise OracleError(f"unexpected YAML node {node!r}")


def _merge_into(out, node):
    # go-yaml v2: a merged mapping overwrites keys set before it; a sequence of
    # mappings is merged last-to-first.
    if isinstance(node, MappingNode):
        out.update(_convert_node(node))
    elif isinstance(node, SequenceNode):
        for child in reversed(node.value):
            if not isinstance(child, MappingNode):
                raise OracleError("map merge requires map or sequence of maps as the value")
            out.update(_convert_node(child))
    else:
        raise OracleError("map merge requires map or sequence of maps as the value")


def yaml_doc_to_value(text):
    """sigs.k8s.io/yaml YAMLToJSON + json.Unmarshal of one document (first document only)."""
    try:
        loader = _NodeLoader(text)
        try:
            node = loader.get_node() if loader.check_node() else None
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise OracleError(f"error converting YAML to JSON: {err}") from None
    return None if node is None else normalize(_convert_node(node))


def k8s_yaml_documents(text):
    """k8s.io/apimachinery/pkg/util/yaml YAMLReader: split on lines starting with '---'."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    docs, buf = [], []
    for line in lines:
        if line.startswith("---"):
            rest = line[3:].strip()
            if rest and not rest.startswith("#"):
                raise OracleError(f"invalid Yaml document separator: {rest}")
            if buf:
                docs.append("".join(buf))
                buf = []
            continue
        buf.append(line + "\n")
    if buf:
        docs.append("".join(buf))
    return docs


def yaml_or_json_stream(text):
    """YAMLOrJSONDecoder over a whole stream -> list of decoded values (None for null docs).

    Raises OracleError(partial=...) on the first undecodable document.
    """
    values = []
    pos = 0
    if text.lstrip().startswith("{"):
        # JSON stream; each object is then read back through sigs.k8s.io/yaml.
        dec = json.JSONDecoder()
        while True:
            start = pos
            while start < len(text) and text[start].isspace():
                start += 1
            if start >= len(text):
                return values
            try:
                _, end = dec.raw_decode(text, start)
            except ValueError as err:
                if len(values) > 1:
                    raise OracleError(f"json: {err}") from None
                break  # the decoder rewinds to what it consumed and goes on as YAML
            values.append(yaml_doc_to_value(text[start:end]))
            pos = end
    for doc in k8s_yaml_documents(text[pos:]):
        values.append(yaml_doc_to_value(doc))
    return values


# ---------------------------------------------------------------------------
# Unstructured helpers
# ---------------------------------------------------------------------------

def require_kind(obj, raw="?"):
    if not isinstance(obj, dict):
        raise OracleError(f"cannot unmarshal {type(obj).__name__} into an object: {raw!r}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind == "":
        raise OracleError(f"Object 'Kind' is missing in '{raw}'")
    return obj


def gvk(obj):
    api = obj.get("apiVersion")
    api = api if isinstance(api, str) else ""
    kind = obj.get("kind")
    kind = kind if isinstance(kind, str) else ""
    if api in ("", "/"):
        group = ""
    elif api.count("/") == 0:
        group = ""
    elif api.count("/") == 1:
        group = api.split("/")[0]
    else:
        return "", "", ""
    version = api.split("/")[-1] if api not in ("", "/") else ""
    return group, version, kind


def nested_str(obj, *fields):
    cur = obj
    for f in fields:
        if not isinstance(cur, dict) or f not in cur:
            return ""
        cur = cur[f]
    return cur if isinstance(cur, str) else ""


def nullable_string_map(obj, *fields):
    cur = obj
    for f in fields:
        if not isinstance(cur, dict):
            raise OracleError(f".{'.'.join(fields)} accessor error")
        if f not in cur:
            return None
        cur = cur[f]
    if cur is None:
        return None
    if not isinstance(cur, dict) or any(not isinstance(v, str) for v in cur.values()):
        raise OracleError(f".{'.'.join(fields)} accessor error: not a map of strings")
    return dict(cur)


def nested_map(obj, *fields):
    """unstructured.NestedMap: None when absent or null, an error when not a map."""
    cur = obj
    for i, f in enumerate(fields):
        if not isinstance(cur, dict):
            raise OracleError(f"{'.'.join(fields[:i])} accessor error: not a map")
        if f not in cur:
            return None
        cur = cur[f]
    if cur is None:
        return None
    if not isinstance(cur, dict):
        raise OracleError(f"{'.'.join(fields)} accessor error: not a map")
    return cur


def set_nested_map(obj, value, *fields):
    cur = obj
    for f in fields[:-1]:
        if f not in cur:
            cur[f] = {}
        if not isinstance(cur[f], dict):
            raise OracleError(f"value cannot be set because {f} is not a map")
        cur = cur[f]
    cur[fields[-1]] = value


def remove_nested(obj, *fields):
    cur = obj
    for f in fields[:-1]:
        if not isinstance(cur, dict) or not isinstance(cur.get(f), dict):
            return
        cur = cur[f]
    if isinstance(cur, dict):
        cur.pop(fields[-1], None)


def is_crd(obj):
    group, _, kind = gvk(obj)
    return kind == "CustomResourceDefinition" and group == "apiextensions.k8s.io"


def set_labels(obj, labels):
    if labels is None:
        remove_nested(obj, "metadata", "labels")
    else:
        set_nested_map(obj, dict(labels), "metadata", "labels")


def set_annotations(obj, annotations):
    if annotations is None:
        remove_nested(obj, "metadata", "annotations")
    else:
        set_nested_map(obj, dict(annotations), "metadata", "annotations")


LEGACY_APP_LABEL = "applications.argoproj.io/app-name"
TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
INSTALLATION_ANNOTATION = "argocd.argoproj.io/installation-id"


def set_app_instance_label(obj, key, val):
    labels = nullable_string_map(obj, "metadata", "labels") or {}
    labels[key] = val
    set_labels(obj, labels)
    if key != LEGACY_APP_LABEL:
        return
    # the legacy label also goes onto pod templates
    group, _, kind = gvk(obj)
    if (group in ("apps", "extensions") and kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet")) or \
            (group == "batch" and kind == "Job"):
        tl = nested_map(obj, "spec", "template", "metadata", "labels")
        template_labels = dict(tl) if tl is not None else {}
        template_labels[key] = val
        set_nested_map(obj, template_labels, "spec", "template", "metadata", "labels")
        if group in ("apps", "extensions") and obj.get("apiVersion") in ("apps/v1beta1", "extensions/v1beta1"):
            selector = nested_map(obj, "spec", "selector")
            if not selector:
                matched = {k: v for k, v in template_labels.items() if k != key}
                set_nested_map(obj, matched, "spec", "selector", "matchLabels")


def set_app_instance_annotation(obj, key, val):
    annotations = nullable_string_map(obj, "metadata", "annotations") or {}
    annotations[key] = val
    set_annotations(obj, annotations)


def remove_annotation(obj, key):
    annotations = nullable_string_map(obj, "metadata", "annotations")
    if annotations is None or key not in annotations:
        return
    del annotations[key]
    set_annotations(obj, annotations if annotations else None)


def truncate_label(val):
    if len(val.encode()) <= 63:
        return val
    b = val.encode()[:63]
    while not re.search(rb"[a-zA-Z0-9]$", b):
        if len(b) <= 1:
            raise OracleError("unable to truncate label to not end with a special character")
        b = b[:-1]
    return b.decode("utf-8", "replace")


def set_app_instance(obj, key, app_name, namespace, tracking_method, installation_id):
    def annotate():
        ns = nested_str(obj, "metadata", "namespace") or namespace
        group, _, kind = gvk(obj)
        value = f"{app_name}:{group}/{kind}:{ns}/{nested_str(obj, 'metadata', 'name')}"
        if installation_id:
            set_app_instance_annotation(obj, INSTALLATION_ANNOTATION, installation_id)
        else:
            remove_annotation(obj, INSTALLATION_ANNOTATION)
        set_app_instance_annotation(obj, TRACKING_ANNOTATION, value)

    if tracking_method == "label":
        set_app_instance_label(obj, key, app_name)
    elif tracking_method == "annotation+label":
        annotate()
        set_app_instance_label(obj, key, truncate_label(app_name))
    else:  # "annotation", empty and unknown values
        annotate()


def post_process(objs, case):
    """GenerateManifests' loop: flatten lists, drop null lists, track, serialize."""
    manifests = []
    for obj in objs:
        if obj is None:
            continue
        if isinstance(obj.get("items"), list):  # Unstructured.IsList
            targets = []
            for item in obj["items"]:
                if not isinstance(item, dict):
                    raise OracleError("items member is not an object")
                targets.append(item)
        elif "spec" not in obj and "status" not in obj and "items" in obj and obj["items"] is None:
            targets = []
        else:
            targets = [obj]
        for t in targets:
            if case.get("appLabelKey") and case.get("appName") and not is_crd(t):
                set_app_instance(t, case["appLabelKey"], case["appName"], case.get("namespace", ""),
                                 case.get("trackingMethod", ""), case.get("installationID", ""))
            manifests.append(go_json(t))
    return manifests


def split_yaml(out):
    """gitops-engine kube.SplitYAML."""
    objs = []
    for v in yaml_or_json_stream(out):
        if v is None:
            continue
        # (the raw JSON text is read back through sigs.k8s.io/yaml into an Unstructured)
        objs.append(require_kind(v, go_json(v)))
    return objs


# ---------------------------------------------------------------------------
# Environment (newEnv) and os.Expand-style substitution (Env.Envsubst)
# ---------------------------------------------------------------------------

def argo_env(case, revision):
    src = case["source"]
    return {
        "ARGOCD_APP_NAME": case.get("appName", ""),
        "ARGOCD_APP_NAMESPACE": case.get("namespace", ""),
        "ARGOCD_APP_PROJECT_NAME": case.get("projectName", ""),
        "ARGOCD_APP_REVISION": revision,
        "ARGOCD_APP_REVISION_SHORT": revision[:7],
        "ARGOCD_APP_REVISION_SHORT_8": revision[:8],
        "ARGOCD_APP_SOURCE_REPO_URL": case.get("repoURL", ""),
        "ARGOCD_APP_SOURCE_PATH": src.get("path", ""),
        "ARGOCD_APP_SOURCE_TARGET_REVISION": src.get("targetRevision", ""),
    }


def _is_shell_special(c):
    return c in "*#$@!?-" or c.isdigit() and c.isascii()


def _is_alnum(c):
    return c == "_" or (c.isascii() and c.isalnum())


def envsubst(s, env):
    """os.Expand with Argo CD's mapping ($$ -> $, unknown -> "")."""
    def mapping(name):
        return "$" if name == "$" else env.get(name, "")

    out, i, j = [], 0, 0
    while j < len(s):
        if s[j] == "$" and j + 1 < len(s):
            out.append(s[i:j])
            rest = s[j + 1:]
            if rest[0] == "{":
                if len(rest) > 2 and _is_shell_special(rest[1]) and rest[2] == "}":
                    name, w = rest[1:2], 3
                else:
                    close = rest.find("}", 1)
                    if close == -1:
                        name, w = "", 1
                    elif close == 1:
                        name, w = "", 2
                    else:
                        name, w = rest[1:close], close + 1
            elif _is_shell_special(rest[0]):
                name, w = rest[0], 1
            else:
                w = 0
                while w < len(rest) and _is_alnum(rest[w]):
                    w += 1
                name = rest[:w]
            if name == "" and w > 0:
                pass  # bad syntax: eaten
            elif name == "":
                out.append("$")
            else:
                out.append(mapping(name))
            j += w
            i = j + 1
        j += 1
    out.append(s[i:])
    return "".join(out)


# ---------------------------------------------------------------------------
# Command lines as Argo CD logs and returns them (util/exec.GetCommandArgsToLog)
# ---------------------------------------------------------------------------

def go_quote(s):
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif c < 0x80:
            out.append("\\x%02x" % c)
        elif c < 0x10000:
            out.append("\\u%04x" % c)
        else:
            out.append("\\U%08x" % c)
    out.append('"')
    return "".join(out)


def command_to_log(argv):
    parts = []
    for arg in argv:
        if arg == "":
            parts.append('""')
        elif any(ch.isspace() for ch in arg):
            parts.append(go_quote(arg))
        else:
            parts.append(arg)
    return " ".join(parts)


# ---------------------------------------------------------------------------
# Kubernetes version (k8s.io/apimachinery/pkg/util/version.ParseGeneric)
# ---------------------------------------------------------------------------

def parse_kube_version(v):
    if v == "":
        return ""
    m = re.match(r"^\s*v?([0-9]+(?:\.[0-9]+)*)(.*)$", v, re.S)
    if not m:
        raise OracleError(f"could not parse kubernetes version {v}: could not parse {v!r} as version")
    parts = m.group(1).split(".")
    if len(parts) < 2:
        raise OracleError(f"could not parse kubernetes version {v}: illegal version string {v!r}")
    for p in parts:
        if len(p) > 1 and p[0] == "0":
            raise OracleError(f"could not parse kubernetes version {v}: illegal zero-prefixed version component {p!r}")
    return ".".join(str(int(p)) for p in parts)


# ---------------------------------------------------------------------------
# Source type (GetAppSourceType, after .argocd-source*.yaml overrides)
# ---------------------------------------------------------------------------

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def merge_source_parameters(source, app_path, app_name):
    merged = copy.deepcopy(source)
    files = [os.path.join(app_path, ".argocd-source.yaml")]
    if app_name:
        files.append(os.path.join(app_path, f".argocd-source-{app_name}.yaml"))
    for f in files:
        if not os.path.exists(f) or os.path.isdir(f):
            continue
        with open(f, encoding="utf-8") as fh:
            patch = yaml_doc_to_value(fh.read())
        merged = merge_patch(merged, patch)
    for k in ("chart", "path", "repoURL", "targetRevision"):
        if k in source:
            merged[k] = source[k]
        else:
            merged.pop(k, None)
    return merged


def generation_enabled(source_type, enabled):
    return (enabled or {}).get(source_type, True)


def app_source_type(source, app_path, enabled):
    explicit = [t for t, k in (("Kustomize", "kustomize"), ("Helm", "helm"), ("Directory", "directory"),
                               ("Plugin", "plugin")) if source.get(k) is not None]
    if len(explicit) > 1:
        raise OracleError("multiple application sources defined: " + ",".join(explicit))
    if explicit:
        return explicit[0] if generation_enabled(explicit[0], enabled) else "Directory"
    # discovery: walk recursively; only the decision for "." counts
    found = {}
    for dirpath, dirnames, filenames in os.walk(app_path):
        dirnames.sort()
        for name in sorted(filenames):
            rel = os.path.relpath(dirpath, app_path)
            if name.endswith("Chart.yaml") and generation_enabled("Helm", enabled):
                found[rel] = "Helm"
            if name in ("kustomization.yaml", "kustomization.yml", "Kustomization") and \
                    generation_enabled("Kustomize", enabled):
                found[rel] = "Kustomize"
    return found.get(".", "Directory")


# ---------------------------------------------------------------------------
# Directory sources (findManifests)
# ---------------------------------------------------------------------------

_MANIFEST_FILE = re.compile(r"^.*\.(yaml|yml|json|jsonnet)$")


def gobwas_glob_regex(pattern):
    """gobwas/glob without separators: * and ? cross '/', [..] / [!..] classes, {a,b} alternatives."""
    out, i, depth = [], 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                raise OracleError(f"bad glob {pattern!r}")
            body = pattern[i + 1:j]
            neg = body.startswith("!")
            if neg:
                body = body[1:]
            out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
            i = j
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("(?s)" + "".join(out) + r"\Z")


def read_utf(path):
    with open(path, "rb") as fh:
        data = fh.read()
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "replace")
    if data.startswith(b"\xff\xfe"):
        return data[2:].decode("utf-16-le", "replace")
    if data.startswith(b"\xfe\xff"):
        return data[2:].decode("utf-16-be", "replace")
    return data.decode("utf-8", "replace")


def potentially_valid_manifests(app_path, repo_root, directory):
    recurse = bool(directory.get("recurse"))
    no_ext_filter = bool(directory.get("disableExtensionFilter"))
    include, exclude = directory.get("include", ""), directory.get("exclude", "")
    result = []

    def walk(dirpath):
        for name in sorted(os.listdir(dirpath)):
            path = os.path.join(dirpath, name)
            if os.path.isdir(path) and not os.path.islink(path):
                if recurse:
                    walk(path)
                continue
            rel = os.path.relpath(path, app_path)
            if not no_ext_filter and not _MANIFEST_FILE.match(name):
                continue
            real = path
            if os.path.islink(path):
                if not os.path.exists(path):
                    continue
                real = os.path.realpath(path)
                if not (real + os.sep).startswith(os.path.realpath(repo_root) + os.sep):
                    raise OracleError(f'illegal filepath in symlink at "{rel}"')
            if not os.path.isfile(real):
                continue
            if exclude and gobwas_glob_regex(exclude).match(rel):
                continue
            if include and not gobwas_glob_regex(include).match(rel):
                continue
            with open(path, "rb") as fh:
                if b"+argocd:skip-file-rendering" in fh.read():
                    continue
            result.append((path, name))

    walk(app_path)
    return result


def jsonnet_eval(path, app_path, repo_root, jsonnet_opts, env):
    import _gojsonnet  # go-jsonnet (the implementation Argo CD links), Python bindings

    tla_vars, tla_codes, ext_vars, ext_codes = {}, {}, {}, {}
    for item in jsonnet_opts.get("tlas") or []:
        (tla_codes if item.get("code") else tla_vars)[item["name"]] = envsubst(item.get("value", ""), env)
    for item in jsonnet_opts.get("extVars") or []:
        (ext_codes if item.get("code") else ext_vars)[item["name"]] = envsubst(item.get("value", ""), env)
    jpaths = [app_path]
    for lib in jsonnet_opts.get("libs") or []:
        p = os.path.realpath(os.path.join(repo_root, lib.lstrip("/")) if os.path.isabs(lib)
                             else os.path.join(repo_root, lib))
        if not (p + os.sep).startswith(os.path.realpath(repo_root) + os.sep) and p != os.path.realpath(repo_root):
            raise OracleError(f"{lib}: resolved to outside repository root")
        jpaths.append(p)
    try:
        return _gojsonnet.evaluate_file(path, jpathdir=jpaths, ext_vars=ext_vars, ext_codes=ext_codes,
                                        tla_vars=tla_vars, tla_codes=tla_codes)
    except RuntimeError as err:
        raise OracleError(f'Failed to evaluate jsonnet "{os.path.basename(path)}": {err}') from None


def directory_objects(app_path, repo_root, source, env, enabled):
    directory = source.get("directory") or {}
    objs = []
    for path, name in potentially_valid_manifests(app_path, repo_root, directory):
        if name.endswith(".jsonnet"):
            if not generation_enabled("Directory", enabled):
                continue
            out = jsonnet_eval(path, app_path, repo_root, directory.get("jsonnet") or {}, env)
            try:
                v = go_json_loads(out)
            except ValueError as err:
                raise OracleError(f'Failed to unmarshal generated json "{name}": {err}') from None
            if isinstance(v, list) and all(x is None or (isinstance(x, dict) and isinstance(x.get("kind"), str)
                                                         and x["kind"]) for x in v):
                objs.extend(x for x in v if x is not None)
            elif isinstance(v, dict):
                objs.append(require_kind(v, out))
            else:
                raise OracleError(f'Failed to unmarshal generated json "{name}"')
        elif name.endswith(".json"):
            text = read_utf(path)
            dec = json.JSONDecoder()
            pos = len(text) - len(text.lstrip())
            try:
                obj, end = dec.raw_decode(text, pos)
            except ValueError as err:
                raise OracleError(f'Failed to unmarshal "{name}": {err}') from None
            obj = go_json_loads(text[pos:end])
            if text[end:].strip():
                raise OracleError(f'Found multiple objects in "{name}". Only single objects are allowed in JSON files.')
            objs.append(require_kind(obj, text))
        else:
            text = read_utf(path)
            good = []
            try:
                for v in yaml_or_json_stream(text):
                    if v is None:
                        continue
                    good.append(require_kind(v, go_json(v)))
            except OracleError as err:
                if good:
                    raise OracleError(f'Failed to unmarshal "{name}": {err}') from None
                if "apiVersion:" in text and "kind:" in text and "metadata:" in text:
                    raise OracleError(f'Failed to unmarshal "{name}": {err}') from None
                good = []  # an unrelated YAML file: ignored
            objs.extend(good)
    return objs


# ---------------------------------------------------------------------------
# Helm (helmTemplate + util/helm Cmd.template)
# ---------------------------------------------------------------------------

def clean_set_parameter(val):
    if val.startswith("{") and val.endswith("}"):
        return val
    out, prev = [], ""
    for ch in val:
        if ch == ",":
            out.append("," if prev == "\\" else "\\,")
        else:
            out.append(ch)
        prev = ch
    return "".join(out)


def resolve_value_file(app_path, repo_root, value_file):
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", value_file):
        raise OracleError(f"the URL scheme '{value_file.split(':')[0]}' is not allowed")
    base = app_path if not os.path.isabs(value_file) else repo_root
    path = os.path.normpath(os.path.join(base, value_file.lstrip("/") if os.path.isabs(value_file) else value_file))
    path = os.path.realpath(path)
    if not path.startswith(os.path.realpath(repo_root) + os.sep):
        raise OracleError(f"file '{value_file}' resolved to outside repository root")
    return path


def helm_objects(app_path, repo_root, case, env, scratch):
    src = case["source"]
    helm = src.get("helm")
    name = case.get("appName", "").split("_", 1)[-1]
    namespace = (helm or {}).get("namespace") or (src.get("kustomize") or {}).get("namespace") or case.get("namespace", "")
    kube_version = parse_kube_version((helm or {}).get("kubeVersion") or (src.get("kustomize") or {}).get("kubeVersion")
                                      or case.get("kubeVersion", ""))
    api_versions = (helm or {}).get("apiVersions") or (src.get("kustomize") or {}).get("apiVersions") \
        or case.get("apiVersions") or []
    sets, set_strings, set_files, values, extra = {}, {}, {}, [], ""
    skip_crds = skip_schema = skip_tests = False
    if helm is not None:
        if helm.get("releaseName"):
            name = helm["releaseName"]
        raw_files = [envsubst(vf, env) for vf in helm.get("valueFiles") or []]
        is_glob = lambda p: any(c in p for c in "*?[")
        explicit = set()
        for vf in raw_files:
            try:
                p = resolve_value_file(app_path, repo_root, vf)
            except OracleError:
                continue
            if not is_glob(p):
                explicit.add(p)
        for vf in raw_files:
            p = resolve_value_file(app_path, repo_root, vf)
            if is_glob(p):
                # doublestar.FilepathGlob: lexical order, '**' crosses directories
                matches = sorted(glob.glob(p, recursive=True, include_hidden=True))
                if not matches:
                    if helm.get("ignoreMissingValueFiles"):
                        continue
                    raise OracleError(f'values file glob "{vf}" matched no files')
                for m in matches:
                    if m not in explicit and m not in values:
                        values.append(m)
                continue
            if not os.path.exists(p) and helm.get("ignoreMissingValueFiles"):
                continue
            if p not in values:
                values.append(p)
        if helm.get("values"):
            extra = os.path.join(scratch, "extra-values-file")
            with open(extra, "w", encoding="utf-8") as fh:
                fh.write(helm["values"])
        for p in helm.get("parameters") or []:
            (set_strings if p.get("forceString") else sets)[p["name"]] = p.get("value", "")
        for p in helm.get("fileParameters") or []:
            set_files[p["name"]] = resolve_value_file(app_path, repo_root, envsubst(p["path"], env))
        skip_crds = bool(helm.get("skipCrds"))
        skip_schema = bool(helm.get("skipSchemaValidation"))
        skip_tests = bool(helm.get("skipTests"))
    if name == "":
        name = case.get("appName", "")
    # Argo CD iterates Go maps for these three groups, so their order within
    # each group is random; the oracle uses name order (check.py compares the
    # groups as sets).
    sets, set_strings, set_files = (dict(sorted(g.items())) for g in (sets, set_strings, set_files))
    args = ["template", ".", "--name-template", name]
    if namespace:
        args += ["--namespace", namespace]
    if kube_version:
        args += ["--kube-version", kube_version]
    for k, v in sets.items():
        args += ["--set", k + "=" + clean_set_parameter(envsubst(v, env))]
    for k, v in set_strings.items():
        args += ["--set-string", k + "=" + clean_set_parameter(envsubst(v, env))]
    for k, v in set_files.items():
        args += ["--set-file", k + "=" + clean_set_parameter(v)]
    for v in values:
        args += ["--values", v]
    if extra:
        args += ["--values", extra]
    for v in api_versions:
        args += ["--api-versions", v]
    if not skip_crds:
        args.append("--include-crds")
    if skip_schema:
        args.append("--skip-schema-validation")
    if skip_tests:
        args.append("--skip-tests")

    home = os.path.join(scratch, "helm-home")
    os.makedirs(home, exist_ok=True)
    proc_env = dict(os.environ, XDG_CACHE_HOME=f"{home}/cache", XDG_CONFIG_HOME=f"{home}/config",
                    XDG_DATA_HOME=f"{home}/data", HELM_CONFIG_HOME=f"{home}/config")
    had_lock = os.path.exists(os.path.join(app_path, "Chart.lock"))
    proc = subprocess.run(["helm", *args], cwd=app_path, env=proc_env, capture_output=True, text=True)
    if not had_lock and os.path.exists(os.path.join(app_path, "Chart.lock")):
        os.remove(os.path.join(app_path, "Chart.lock"))
    command = command_to_log(["helm", *args]).replace(repo_root, ".")
    if extra:
        command = command.replace(extra, "<temp file with values from source.helm.values/valuesObject>")
    if proc.returncode != 0:
        raise OracleError(f"failed to execute helm template command: {proc.stderr.strip()}")
    return split_yaml(proc.stdout), [command]


# ---------------------------------------------------------------------------
# Kustomize (util/kustomize Build)
# ---------------------------------------------------------------------------

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def split_image_name(image):
    """kustomize api/internal/image.Split."""
    search, slash = image, image.find("/")
    if slash > 0:
        search = image[slash:]
    else:
        slash = 0
    i_d, i_c = search.find("@"), search.find(":")
    if i_c < 0 and i_d < 0:
        return image, "", ""
    if i_d >= 0 and (i_d < i_c or i_c < 0):
        i_d += slash
        return image[:i_d], "", image[i_d + 1:]
    if i_d >= 0 and i_c >= 0:
        i_d += slash
        i_c += slash
        return image[:i_c], image[i_c + 1:i_d], image[i_d + 1:]
    i_c += slash
    return image[:i_c], image[i_c + 1:], ""


class KustomizationEditor:
    """The effect of the `kustomize edit` commands Argo CD runs, applied to the file directly."""

    def __init__(self, app_path):
        for n in KUSTOMIZATION_NAMES:
            if os.path.exists(os.path.join(app_path, n)):
                self.path = os.path.join(app_path, n)
                break
        else:
            raise OracleError("Missing kustomization file")

    def _edit(self, fn):
        with open(self.path, encoding="utf-8") as fh:
            k = yaml.safe_load(fh) or {}
        # kustfile.Read() -> FixKustomization()
        k.setdefault("kind", "Kustomization")
        k.setdefault("apiVersion", "kustomize.config.k8s.io/v1beta1" if k["kind"] != "Component"
                     else "kustomize.config.k8s.io/v1alpha1")
        if k.get("bases"):
            k["resources"] = (k.get("resources") or []) + k["bases"]
        k.pop("bases", None)
        if k.get("imageTags"):
            k["images"] = (k.get("images") or []) + k["imageTags"]
        k.pop("imageTags", None)
        fn(k)
        with open(self.path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(k, fh, default_flow_style=False, sort_keys=False)

    def set_field(self, field, value):
        self._edit(lambda k: k.__setitem__(field, value))

    def set_images(self, args):
        wanted = {}
        for arg in args:
            key, sep, value = arg.partition("=")
            if not sep:
                key, value = "", arg
            name, tag, digest = split_image_name(value)
            if name == arg:
                raise OracleError("invalid format of image, use one of the following options: ...")
            img = {"name": name} if key == "" else {"name": key, "newName": name}
            if tag:
                img["newTag"] = tag
            if digest:
                img["digest"] = digest
            wanted[img["name"]] = img

        def apply(k):
            for im in k.get("images") or []:
                if im.get("name") in wanted:
                    arg_im = wanted[im["name"]]
                    for f in ("newName", "newTag", "digest"):
                        if arg_im.get(f) == "*":
                            arg_im[f] = im.get(f, "")
                    continue
                wanted[im.get("name")] = im
            images = []
            for v in wanted.values():
                v = {f: x for f, x in v.items() if not (f in ("newName", "newTag", "digest") and x in ("*", ""))}
                images.append(v)
            k["images"] = sorted(images, key=lambda im: im.get("name", ""))
        self._edit(apply)

    def set_replicas(self, replicas):
        def apply(k):
            by_name = {r["name"]: {"name": r["name"], "count": r["count"]} for r in replicas}
            for r in k.get("replicas") or []:
                by_name.setdefault(r["name"], r)
            k["replicas"] = sorted(by_name.values(), key=lambda r: r["name"])
        self._edit(apply)

    def add_metadata(self, field, pairs, force, without_selector=False, include_templates=False):
        def put(m, key, value):
            if key in m and not force:
                raise OracleError(f"{field} {key} already in kustomization file. Use --force to override.")
            m[key] = value

        def apply(k):
            if field == "label" and without_selector:
                labels = k.setdefault("labels", [])
                for key, value in pairs.items():
                    match = None
                    for entry in labels:
                        if bool(entry.get("includeSelectors")) is False and \
                                bool(entry.get("includeTemplates")) == include_templates:
                            match = entry
                            break
                    if match is not None:
                        put(match.setdefault("pairs", {}), key, value)
                        continue
                    new = {"pairs": {}, "includeTemplates": include_templates} if include_templates else {"pairs": {}}
                    put(new["pairs"], key, value)
                    labels.append(new)
            else:
                target = k.get("commonLabels" if field == "label" else "commonAnnotations") or {}
                for key, value in pairs.items():
                    put(target, key, value)
                k["commonLabels" if field == "label" else "commonAnnotations"] = target
        self._edit(apply)


def kustomize_objects(app_path, repo_root, case, env):
    src = case["source"]
    opts = src.get("kustomize")
    commands = []

    def log(argv):
        commands.append(command_to_log(argv))

    if opts is not None:
        editor = None

        def ed():
            nonlocal editor
            if editor is None:
                editor = KustomizationEditor(app_path)
            return editor

        if opts.get("namePrefix"):
            log(["kustomize", "edit", "set", "nameprefix", "--", opts["namePrefix"]])
            ed().set_field("namePrefix", opts["namePrefix"])
        if opts.get("nameSuffix"):
            log(["kustomize", "edit", "set", "namesuffix", "--", opts["nameSuffix"]])
            ed().set_field("nameSuffix", opts["nameSuffix"])
        if opts.get("images"):
            images = [envsubst(i, env) for i in opts["images"]]
            log(["kustomize", "edit", "set", "image", *images])
            ed().set_images(images)
        if opts.get("replicas"):
            reps = [{"name": r["name"], "count": int(r["count"])} for r in opts["replicas"]]
            log(["kustomize", "edit", "set", "replicas", *[f"{r['name']}={r['count']}" for r in reps]])
            ed().set_replicas(reps)
        # (labels and annotations come from Go maps: random argument order in
        # Argo CD; the oracle uses key order, check.py compares them as sets)
        if opts.get("commonLabels"):
            flags = (["--force"] if opts.get("forceCommonLabels") else []) + \
                    (["--without-selector"] if opts.get("labelWithoutSelector") else []) + \
                    (["--include-templates"] if opts.get("labelIncludeTemplates") else [])
            labels = {k: envsubst(v, env) for k, v in sorted(opts["commonLabels"].items())}
            log(["kustomize", "edit", "add", "label", *flags, *[f"{k}:{v}" for k, v in labels.items()]])
            if opts.get("labelIncludeTemplates") and not opts.get("labelWithoutSelector"):
                raise OracleError("--without-selector flag must be specified for --include-templates to work")
            ed().add_metadata("label", {k: _trim_quotes(v) for k, v in labels.items()}, bool(opts.get("forceCommonLabels")),
                              bool(opts.get("labelWithoutSelector")), bool(opts.get("labelIncludeTemplates")))
        if opts.get("commonAnnotations"):
            ann = dict(sorted(opts["commonAnnotations"].items()))
            if opts.get("commonAnnotationsEnvsubst"):
                ann = {k: envsubst(v, env) for k, v in ann.items()}
            flags = ["--force"] if opts.get("forceCommonAnnotations") else []
            log(["kustomize", "edit", "add", "annotation", *flags, *[f"{k}:{v}" for k, v in ann.items()]])
            ed().add_metadata("annotation", {k: _trim_quotes(v) for k, v in ann.items()},
                              bool(opts.get("forceCommonAnnotations")))
        if opts.get("namespace"):
            log(["kustomize", "edit", "set", "namespace", "--", opts["namespace"]])
            ed().set_field("namespace", opts["namespace"])
        if opts.get("patches") or opts.get("components"):
            raise OracleError("oracle: kustomize patches/components are not modelled")

    argv = ["kustomize", "build", app_path]
    build_options = (case.get("kustomizeOptions") or {}).get("buildOptions", "")
    if build_options:
        argv += build_options.split()
        if "--enable-helm" in build_options:  # kustomize >= 5.3.0 on this machine
            kv = parse_kube_version((opts or {}).get("kubeVersion") or case.get("kubeVersion", ""))
            if kv:
                argv += ["--helm-kube-version", kv]
            for v in (opts or {}).get("apiVersions") or case.get("apiVersions") or []:
                argv += ["--helm-api-versions", v]
    log(argv)
    proc_env = dict(os.environ, **env)
    proc = subprocess.run(argv, cwd=repo_root, env=proc_env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OracleError(f"kustomize build failed: {proc.stderr.strip()}")
    return split_yaml(proc.stdout), [c.replace(repo_root, ".") for c in commands]


def _trim_quotes(s):
    return s[1:-1] if len(s) >= 2 and s[0] == '"' and s[-1] == '"' else s


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def generate(repo_root, revision, case):
    """Expected {"manifests", "sourceType", "commands"}; raises OracleError when Argo CD would fail."""
    repo_root = os.path.realpath(repo_root)
    src = case["source"]
    rel = src.get("path", "")
    if os.path.isabs(rel):
        raise OracleError(f"{rel}: app path is absolute")
    app_path = os.path.normpath(os.path.join(repo_root, rel))
    if not (app_path + os.sep).startswith(repo_root + os.sep) and app_path != repo_root:
        raise OracleError(f"{rel}: app path outside root")
    if not os.path.exists(app_path):
        raise OracleError(f"{rel}: app path does not exist")
    if not os.path.isdir(app_path):
        raise OracleError(f"{rel}: app path is not a directory")
    env = argo_env(case, revision)
    source = merge_source_parameters(src, app_path, case.get("appName", ""))
    case = dict(case, source=source)
    source_type = app_source_type(source, app_path, case.get("enabledSourceTypes"))
    scratch = tempfile.mkdtemp(prefix="oracle-")
    try:
        commands = []
        if source_type == "Helm":
            objs, commands = helm_objects(app_path, repo_root, case, env, scratch)
        elif source_type == "Kustomize":
            objs, commands = kustomize_objects(app_path, repo_root, case, env)
        elif source_type == "Directory":
            objs = directory_objects(app_path, repo_root, source, env, case.get("enabledSourceTypes"))
        else:
            raise OracleError(f"oracle: source type {source_type} not modelled")
        return {"manifests": post_process(objs, case), "sourceType": source_type, "commands": commands}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    root, rev, case_file = sys.argv[1:4]
    with open(case_file, encoding="utf-8") as fh:
        the_case = json.load(fh)
    try:
        print(json.dumps(generate(root, rev, the_case), indent=1))
    except OracleError as e:
        print(json.dumps({"error": str(e)}))
        sys.exit(1)
