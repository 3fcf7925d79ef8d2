#!/usr/bin/env bash
# The crate's import graph between top-level modules (src/<name>.rs or
# src/<name>/), from `crate::<name>` paths and `super::` paths that climb to
# the crate root. Test code (files named tests.rs or *_tests.rs, and items
# under #[cfg(test)]) and comments are left out: tests may reach anywhere.
#
# Prints every edge with its layers, then fails (exit 1) when a module
# imports one of a higher layer, when there is an import cycle (even within
# one layer), or when a module is in no layer.
set -euo pipefail
cd "$(dirname "$0")/.."

# The layers, highest first: a module may import its own layer (without a
# cycle) and the layers below it, never one above.
LAYERS=(
  "cli"                               # the command line
  "app"                               # `tqsup run`: everything wired together
  "supervisor fcgi dev admin"         # the subsystems
  "control metrics logging signals"   # what the subsystems share
  "generation render discover runtime_dir phpfpm_test exit" # php-fpm's files, binary and -t; exit codes
  "config"                            # the validated config
)

declare -A layer_of
for i in "${!LAYERS[@]}"; do
  for m in ${LAYERS[$i]}; do layer_of[$m]=$((i + 1)); done
done

# `pub use <module>::<name>;` in lib.rs makes `crate::<name>` an alias.
declare -A alias
while read -r target name; do
  alias[$name]=$target
done < <(sed -nE 's/^pub use ([a-z_][a-z0-9_]*)::([a-z_][a-z0-9_]*);$/\1 \2/p' src/lib.rs)

# One "from to" line per reference to another top-level module.
references() {
  local f rel top depth
  while IFS= read -r f; do
    rel=${f#src/}
    case "$rel" in lib.rs | main.rs) continue ;; esac
    case "$(basename "$rel")" in tests.rs | *_tests.rs) continue ;; esac
    top=${rel%%/*}
    top=${top%.rs}
    # How many `super::` reach the crate root from this file.
    depth=$(tr -cd '/' <<<"$rel" | wc -c)
    [[ "$(basename "$rel")" == mod.rs ]] || depth=$((depth + 1))
    awk -v top="$top" -v depth="$depth" '
      # Skip the item after #[cfg(test)]: count braces until they close
      # (a block) or the line ends in ";" with none open (a use, a mod).
      skipping == 1 {
        open += gsub(/\{/, "{"); open -= gsub(/\}/, "}")
        if (open <= 0 && ($0 ~ /[;}][[:space:]]*$/)) skipping = 0
        next
      }
      /^[[:space:]]*#\[cfg\(test\)\]/ { skipping = 1; open = 0; next }
      /^[[:space:]]*\/\// { next }
      {
        line = $0
        sub(/\/\/.*$/, "", line)
        if (line ~ /crate::\{/) {
          printf "%s: grouped `crate::{...}` imports are not read; write one path per use\n", FILENAME > "/dev/stderr"
          bad = 1
        }
        while (match(line, /crate::[a-z_][a-z0-9_]*/)) {
          print top, substr(line, RSTART + 7, RLENGTH - 7)
          line = substr(line, RSTART + RLENGTH)
        }
        line = $0
        sub(/\/\/.*$/, "", line)
        while (match(line, /(super::)+[a-z_][a-z0-9_]*/)) {
          seg = substr(line, RSTART, RLENGTH)
          n = gsub(/super::/, "", seg)
          if (n == depth) print top, seg
          line = substr(line, RSTART + RLENGTH)
        }
      }
      END { exit bad }
    ' "$f"
  done < <(find src -name '*.rs' | sort)
}

edges=$(references | while read -r from to; do
  to=${alias[$to]:-$to}
  [[ "$from" != "$to" ]] && echo "$from $to"
done | sort -u)

status=0
for m in $(awk '{print $1; print $2}' <<<"$edges" | sort -u); do
  if [[ -z "${layer_of[$m]:-}" ]]; then
    echo "error: module $m is in no layer; add it to LAYERS in $0"
    status=1
  fi
done
[[ $status == 0 ]] || exit 1

echo "Layers (highest first):"
for i in "${!LAYERS[@]}"; do echo "  $((i + 1)). ${LAYERS[$i]}"; done
echo
echo "Edges (module [layer] -> what it imports [layer]):"
for from in $(awk '{print $1}' <<<"$edges" | sort -u); do
  targets=$(awk -v f="$from" '$1 == f {print $2}' <<<"$edges" |
    while read -r to; do printf '%s [%s], ' "$to" "${layer_of[$to]}"; done)
  echo "  $from [${layer_of[$from]}] -> ${targets%, }"
done
echo

while read -r from to; do
  if (( layer_of[$to] < layer_of[$from] )); then
    echo "error: $from (layer ${layer_of[$from]}) imports $to (layer ${layer_of[$to]}), a higher layer"
    grep -rnE "crate::$to\b|(super::)+$to\b" "src/$from.rs" "src/$from" 2>/dev/null | sed "s/^/    /" | head -5 || true
    status=1
  fi
done <<<"$edges"

if ! loop=$(tsort <<<"$edges" 2>&1 >/dev/null); then
  # tsort names each loop's members, one per line, after a header line.
  awk '/input contains a loop/ { if (m) print "error: import cycle:" m; m = ""; next }
       { sub(/^tsort: /, ""); m = m " " $0 }
       END { if (m) print "error: import cycle:" m }' <<<"$loop"
  status=1
fi

if [[ $status == 0 ]]; then
  echo "ok: no module imports a higher layer, and there is no import cycle"
fi
exit $status
