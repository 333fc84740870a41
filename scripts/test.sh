#!/usr/bin/env bash
# Builds persistent-map and runs every test. Exits non-zero on any failure.
#
#   ./scripts/test.sh              warnings-as-errors build + the whole suite
#   PMAP_SANITIZE=1 ./scripts/test.sh
#                                  also the suite under ASan+UBSan and under TSan
#                                  (CI sets this)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
pmap_install_deps libgtest-dev libgmock-dev

run_preset() {
  local preset=$1
  echo "==> [$preset] configure and build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  echo "==> [$preset] test"
  ctest --preset "$preset"
}

run_preset dev
if [ "${PMAP_SANITIZE:-0}" = 1 ]; then
  run_preset asan
  run_preset tsan
fi
echo "==> all tests passed"
