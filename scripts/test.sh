#!/usr/bin/env bash
# Builds persistent-map and runs every test. Exits non-zero on any failure.
#
#   ./scripts/test.sh              warnings-as-errors build + the whole suite
#                                  (fuzz corpora replayed, 200-kill crash loops,
#                                  an 8-second soak, I/O fault injection)
#   PMAP_SANITIZE=1 ./scripts/test.sh
#                                  also the suite under ASan+UBSan and under TSan,
#                                  a clang build with -Wthread-safety (the lock
#                                  annotations checked), and each libFuzzer
#                                  target for a short while (CI sets this)
#   PMAP_LONG_TESTS=1 ./scripts/test.sh
#                                  the long versions (about 25 minutes): 2,000-kill
#                                  crash loops, a 5-minute soak (PMAP_SOAK_SECONDS)
#                                  and PMAP_FUZZ_SECONDS (default 300) per fuzz
#                                  target; with PMAP_SANITIZE=1 the ASan and TSan
#                                  suites still run their quick versions (long,
#                                  they take hours)
#
# The PostgreSQL and Redis suites run against throwaway servers this script
# starts (scripts/services.sh) and stops on every exit path; they must run:
# a suite that skipped fails the run (PMAP_REQUIRE_SERVERS).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/deps.sh
. scripts/services.sh
extra=()
long=${PMAP_LONG_TESTS:-0}
sanitize=${PMAP_SANITIZE:-0}
[ "$sanitize" = 1 ] || [ "$long" = 1 ] && extra+=(clang libclang-rt-14-dev)
pmap_install_deps libgtest-dev libgmock-dev libpq-dev postgresql libhiredis-dev redis-server \
  redis-tools "${extra[@]}"

trap pmap_stop_services EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
pmap_start_postgres
pmap_start_redis
export PMAP_REQUIRE_SERVERS=pg,redis

# The long tests outlast the default per-test timeout (300 s).
timeout=300
[ "$long" = 1 ] && timeout=5400

run_preset() {
  local preset=$1
  echo "==> [$preset] configure and build"
  cmake --preset "$preset" -DPMAP_TEST_TIMEOUT=$timeout -DPMAP_WITH_POSTGRES=ON \
    -DPMAP_WITH_REDIS=ON >/dev/null
  cmake --build --preset "$preset"
  echo "==> [$preset] test"
  local server
  for suite in postgres redis Pmapctl; do
    ctest --preset "$preset" -N -R "$suite" | grep -qE "Total Tests: [1-9]" || {
      echo "[$preset] has no $suite tests: the suite would not run" >&2; exit 1; }
  done
  ctest --preset "$preset"
}

run_fuzzers() {
  local seconds=$1 work
  echo "==> [fuzz] configure and build (clang, libFuzzer, ASan+UBSan)"
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz
  work=$(mktemp -d)
  for target in csv uri codec; do
    echo "==> [fuzz] $target for ${seconds}s"
    mkdir -p "$work/$target"
    cp tests/fuzz/corpus/$target/* "$work/$target/"
    # The corpus copy is absolute: the uri target changes directory.
    (cd "$work" && "$root/build/fuzz/tests/pmap_fuzz_$target" "$work/$target" \
        -max_total_time="$seconds" -print_final_stats=1 >"$work/$target.log" 2>&1) || {
      tail -40 "$work/$target.log"; echo "fuzz target $target failed; reproducer in $work" >&2; exit 1; }
    grep -E "stat::number_of_executed_units" "$work/$target.log" | sed "s/^/    $target: /"
  done
  rm -rf "$work"
}

run_preset dev
if [ "$sanitize" = 1 ]; then
  echo "==> [tsa] clang -Wthread-safety build"
  cmake --preset tsa -DPMAP_WITH_POSTGRES=ON -DPMAP_WITH_REDIS=ON >/dev/null
  cmake --build --preset tsa
  PMAP_LONG_TESTS=0 run_preset asan
  PMAP_LONG_TESTS=0 run_preset tsan
fi
if [ "$long" = 1 ]; then
  run_fuzzers "${PMAP_FUZZ_SECONDS:-300}"
elif [ "$sanitize" = 1 ]; then
  run_fuzzers "${PMAP_FUZZ_SECONDS:-20}"
fi
echo "==> all tests passed"
