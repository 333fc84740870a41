#!/usr/bin/env bash
# Builds in Release, runs the benchmark harness and the Python peers, and
# writes BENCHMARKS.md and docs/bench/ratios.svg.
#
#   ./scripts/bench.sh            N = 100,000 entries
#   ./scripts/bench.sh --big      N = 1,000,000 (slow)
#   PMAP_BENCH_DIR=/some/fs ./scripts/bench.sh   put the files on that file system
#   PMAP_BENCH_PG=conninfo ./scripts/bench.sh     the PostgreSQL workload on your
#                                                 server (default: a throwaway one,
#                                                 durable: fsync and synchronous_commit on)
#   PMAP_BENCH_REDIS=redis://host:port ./scripts/bench.sh
#                                                 the Redis workload on your server
#                                                 (default: a throwaway one, appendonly
#                                                 with appendfsync everysec)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
. scripts/services.sh
pmap_install_deps gnuplot-nox python3 python3-diskcache python3-sqlitedict libpq-dev postgresql \
  libhiredis-dev redis-server redis-tools sqlite3
trap pmap_stop_services EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
if [ -z "${PMAP_BENCH_PG:-}" ]; then
  PMAP_PG_DURABLE=1 pmap_start_postgres
  export PMAP_BENCH_PG=$PMAP_TEST_PG
fi
if [ -z "${PMAP_BENCH_REDIS:-}" ]; then
  pmap_start_redis
  export PMAP_BENCH_REDIS=$PMAP_TEST_REDIS
fi

n=100000
[ "${1:-}" = "--big" ] && n=1000000
dir=${PMAP_BENCH_DIR:-build/bench-data}
mkdir -p "$dir" build/bench docs/bench

cmake --preset release >/dev/null
cmake --build --preset release --target pmap_bench

echo "==> pmap_bench --n $n (files in $dir)"
build/release/bench/pmap_bench --n "$n" --dir "$dir" --tsv build/bench/results.tsv
echo "==> Python peers"
/usr/bin/python3 bench/peers/peers.py --n "$n" --dir "$dir" --out build/bench/peers.tsv
/usr/bin/python3 bench/report.py build/bench/results.tsv build/bench/peers.tsv BENCHMARKS.md \
  docs/bench/ratios.svg "N = $n, $(nproc) cores, $(date -u +%Y-%m-%d)"
rm -rf "$dir"
echo "==> wrote BENCHMARKS.md and docs/bench/ratios.svg"
