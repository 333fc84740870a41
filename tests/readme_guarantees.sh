#!/usr/bin/env bash
# Every test the README's "Guarantees" section names exists: a renamed or
# deleted test must not leave a promise without its check.
#   readme_guarantees.sh README.md TEST_BINARY...
set -euo pipefail
readme=$1
shift
section=$(sed -n '/^## Guarantees/,/^## /p' "$readme")
names=$(grep -oE '`[A-Za-z0-9_]+(/[A-Za-z0-9_]+)?\.[A-Za-z0-9_*/]+`' <<<"$section" | tr -d '`' | sort -u)
[ -n "$names" ] || { echo "no test names found in the Guarantees section" >&2; exit 1; }
missing=0
count=0
for name in $names; do
  count=$((count + 1))
  found=0
  for binary in "$@"; do
    if "$binary" --gtest_list_tests --gtest_filter="$name" | grep -q '^  '; then
      found=1
      break
    fi
  done
  if [ $found = 0 ]; then
    echo "README names $name, which no test binary has" >&2
    missing=1
  fi
done
[ $missing = 0 ] || exit 1
echo "$count test names in the Guarantees section, all found"
