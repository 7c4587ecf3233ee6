#!/bin/sh
# helm-kustomize: `helm template` of ./chart, then `kustomize build .`
# over it. Run in the app directory with one of:
#
#   init        builds the chart's dependencies when Chart.yaml declares
#               some and chart/charts/ does not hold them yet
#   generate    prints the manifests
#   parameters  prints the parameter announcements (JSON) for the chart's
#               values.yaml: one string parameter `values.<path>` per leaf
#               value, with the value as its default
#
# generate reads:
#   PARAM_RELEASE_NAME       release name (default: ARGOCD_APP_NAME)
#   PARAM_VALUES_<PATH>      overrides of announced values (the path
#                            upper-cased, other characters than A-Z, 0-9
#                            and _ turned into _, as Argo CD names
#                            parameters in the environment)
#   ARGOCD_APP_NAMESPACE     --namespace
#   KUBE_VERSION, KUBE_API_VERSIONS   --kube-version, --api-versions
#
# When the app has no kustomization file, the helm output is printed as is.
# Needs sh, awk, sed, helm and kustomize on PATH.
set -eu
export LC_ALL=C

chart=./chart
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
  echo "helm-kustomize: $*" >&2
  exit 1
}

[ -f "$chart/Chart.yaml" ] || fail "no chart/Chart.yaml in the app directory"

# Prints one line per leaf value of chart/values.yaml: its --set path, a
# tab, and its announcement as JSON. Rendered by helm itself (a throwaway
# chart holding only the values and one template), so YAML is parsed by
# the same code that renders the chart; the lines are YAML comments for
# helm, which parses what templates print.
leaves() {
  mkdir -p "$work/values/templates"
  printf 'apiVersion: v2\nname: values\nversion: 0.0.0\n' > "$work/values/Chart.yaml"
  if [ -f "$chart/values.yaml" ]; then
    cp "$chart/values.yaml" "$work/values/values.yaml"
  fi
  cat > "$work/values/templates/leaves.yaml" <<'TEMPLATE'
{{- define "leaves" -}}
{{- $path := index . 0 -}}
{{- $value := index . 1 -}}
{{- if kindIs "map" $value -}}
{{- range $key := keys $value | sortAlpha -}}
{{- $escaped := replace "." "\\." $key -}}
{{- include "leaves" (list (ternary $escaped (printf "%s.%s" $path $escaped) (eq $path "")) (index $value $key)) -}}
{{- end -}}
{{- else if and (not (kindIs "slice" $value)) (not (kindIs "invalid" $value)) -}}
#leaf{{ "\t" }}{{ $path }}{{ "\t" }}{{ dict "name" (printf "values.%s" $path) "title" $path "string" (toString $value) | toJson }}
{{ end -}}
{{- end -}}
{{- include "leaves" (list "" .Values) -}}
TEMPLATE
  helm template values "$work/values" --show-only templates/leaves.yaml > "$work/leaves" ||
    fail "cannot read chart/values.yaml"
  tab=$(printf '\t')
  sed -n "s/^#leaf$tab//p" "$work/leaves"
}

case "${1:-generate}" in
init)
  if grep -q '^dependencies:' "$chart/Chart.yaml" && ! ls "$chart"/charts/* >/dev/null 2>&1; then
    # A private repository list, so concurrent renders do not share one.
    export HELM_REPOSITORY_CONFIG="$work/repositories.yaml"
    export HELM_REPOSITORY_CACHE="$work/cache"
    n=0
    for url in $(awk '$1 == "repository:" { print $2 } $2 == "repository:" { print $3 }' "$chart/Chart.yaml" | tr -d "\"'"); do
      case $url in
      http://* | https://*)
        n=$((n + 1))
        helm repo add "dependency-$n" "$url" >&2
        ;;
      esac
    done
    helm dependency build "$chart" >&2
  fi
  ;;

parameters)
  leaves | cut -f2- | awk 'BEGIN { printf "[" } NR > 1 { printf "," } { printf "%s", $0 } END { print "]" }'
  ;;

generate)
  release=${PARAM_RELEASE_NAME:-${ARGOCD_APP_NAME:-$(basename "$PWD")}}
  set -- template "$release" "$chart" --include-crds
  if [ -n "${ARGOCD_APP_NAMESPACE:-}" ]; then
    set -- "$@" --namespace "$ARGOCD_APP_NAMESPACE"
  fi
  if [ -n "${KUBE_VERSION:-}" ]; then
    set -- "$@" --kube-version "$KUBE_VERSION"
  fi
  if [ -n "${KUBE_API_VERSIONS:-}" ]; then
    old_ifs=$IFS
    IFS=,
    for api in $KUBE_API_VERSIONS; do
      set -- "$@" --api-versions "$api"
    done
    IFS=$old_ifs
  fi
  leaves | cut -f1 > "$work/paths"
  while IFS= read -r path; do
    var=PARAM_VALUES_$(printf '%s' "$path" | tr 'a-z' 'A-Z' | sed 's/[^A-Z0-9_]/_/g')
    eval "present=\${$var+yes}"
    if [ -n "$present" ]; then
      eval "value=\$$var"
      # --set-string splits at commas and reads backslashes as escapes.
      value=$(printf '%s' "$value" | sed -e 's/\\/\\\\/g' -e 's/,/\\,/g')
      set -- "$@" --set-string "$path=$value"
    fi
  done < "$work/paths"
  helm "$@" > helm-output.yaml || fail "helm template failed"
  if [ -f kustomization.yaml ] || [ -f kustomization.yml ] || [ -f Kustomization ]; then
    kustomize build . || fail "kustomize build failed"
  else
    cat helm-output.yaml
  fi
  ;;

*)
  fail "unknown step ${1}: expected init, generate or parameters"
  ;;
esac
