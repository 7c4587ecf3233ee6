#!/bin/sh
# envsubst-yaml generate: prints every *.yaml and *.yml file of the app
# directory (not its subdirectories, not hidden files), in name order, as
# one YAML stream, replacing
#
#   ${NAME}            by the value of NAME
#   ${NAME:-default}   by the value of NAME, or `default` when NAME is
#                      unset or empty
#   $${                by a literal ${
#
# for NAME starting with ARGOCD_ENV_, ARGOCD_APP_ or PARAM_. Other ${...}
# text is left alone, so shell snippets in ConfigMaps survive. A reference
# to an unset variable without a default is an error naming the file and
# line. Values are inserted verbatim: quote them in the YAML when they may
# hold YAML syntax.
#
# POSIX sh and awk only (no envsubst binary needed).
set -eu
export LC_ALL=C

files=$(ls -1 | grep -E '\.(yaml|yml)$' || true)
if [ -z "$files" ]; then
  echo "envsubst-yaml: no *.yaml or *.yml file in the app directory" >&2
  exit 1
fi

status=0
printf '%s\n' "$files" | while IFS= read -r file; do
  [ -f "$file" ] || continue
  printf -- '---\n# Source: %s\n' "$file"
  awk -v file="$file" '
    BEGIN {
      allowed = "^(ARGOCD_ENV_|ARGOCD_APP_|PARAM_)[A-Za-z0-9_]*$"
      failed = 0
    }
    {
      line = $0
      out = ""
      while ((i = index(line, "${")) > 0) {
        if (i > 1 && substr(line, i - 1, 1) == "$") {
          # $${ is an escaped ${
          out = out substr(line, 1, i - 2) "${"
          line = substr(line, i + 2)
          continue
        }
        rest = substr(line, i + 2)
        j = index(rest, "}")
        if (j == 0) {
          break
        }
        expr = substr(rest, 1, j - 1)
        name = expr
        fallback = ""
        has_fallback = 0
        k = index(expr, ":-")
        if (k > 0) {
          name = substr(expr, 1, k - 1)
          fallback = substr(expr, k + 2)
          has_fallback = 1
        }
        if (name ~ allowed) {
          if ((name in ENVIRON) && ENVIRON[name] != "") {
            value = ENVIRON[name]
          } else if (has_fallback) {
            value = fallback
          } else if (name in ENVIRON) {
            value = ""
          } else {
            printf "envsubst-yaml: %s:%d: %s is not set\n", file, FNR, name | "cat 1>&2"
            failed = 1
            value = ""
          }
          out = out substr(line, 1, i - 1) value
        } else {
          out = out substr(line, 1, i - 1) "${" expr "}"
        }
        line = substr(rest, j + 1)
      }
      print out line
    }
    END {
      if (failed) {
        exit 1
      }
    }
  ' "$file" || exit 1
done || status=1
exit "$status"
