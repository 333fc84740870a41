#!/usr/bin/env bash
# Builds persistent-map in Release and runs the demo twice on the embedded
# SQLite default: the second run (a new process) shows what the first stored.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
pmap_install_deps

cmake --preset release >/dev/null
cmake --build --preset release --target pmap_demo pmapctl

mkdir -p build/demo
db=build/demo/pmap-demo.db
echo
echo "==> first run: build/release/examples/pmap_demo $db"
build/release/examples/pmap_demo "$db"
echo
echo "==> second run, a new process on the same file"
build/release/examples/pmap_demo "$db"
echo
echo "==> what the store holds, from the shell: pmapctl list and pmapctl stats"
echo "\$ pmapctl list sqlite:$db"
build/release/tools/pmapctl/pmapctl list "sqlite:$db"
echo "\$ pmapctl stats sqlite:$db"
build/release/tools/pmapctl/pmapctl stats "sqlite:$db"
