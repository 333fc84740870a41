#!/usr/bin/env bash
# Installs pmap into a temporary prefix and builds a consumer project against
# it with find_package(pmap CONFIG), then builds the same consumer with
# add_subdirectory(<checkout>). Both consumers must run and print answer=42.
set -euo pipefail
src=$(cd "$1" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
quiet() { "$@" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }; }

quiet cmake -S "$src" -B "$work/pmap" -DCMAKE_BUILD_TYPE=Release -DPMAP_BUILD_TESTS=OFF \
  -DPMAP_BUILD_EXAMPLES=OFF -DCMAKE_INSTALL_PREFIX="$work/prefix"
quiet cmake --build "$work/pmap" -j2
quiet cmake --install "$work/pmap"
test -f "$work/prefix/include/pmap/pmap.hpp"
! test -e "$work/prefix/include/pmap/../sqlite3.h"

quiet cmake -S "$src/tests/install/consumer" -B "$work/by-package" -DCMAKE_PREFIX_PATH="$work/prefix"
quiet cmake --build "$work/by-package" -j2
out=$("$work/by-package/consumer" "$work/a.db")
echo "find_package consumer: $out"
[ "$out" = "answer=42" ]

quiet cmake -S "$src/tests/install/consumer" -B "$work/by-subdir" -DPMAP_SOURCE_DIR="$src"
quiet cmake --build "$work/by-subdir" -j2
out=$("$work/by-subdir/consumer" "$work/b.db")
echo "add_subdirectory consumer: $out"
[ "$out" = "answer=42" ]
# The optional PostgreSQL component, both ways, when this machine builds it.
if [ -n "$(find "$work/prefix" -name pmapPostgresTargets.cmake)" ]; then
  for how in "-DCMAKE_PREFIX_PATH=$work/prefix" "-DPMAP_SOURCE_DIR=$src"; do
    rm -rf "$work/pg"
    quiet cmake -S "$src/tests/install/consumer" -B "$work/pg" -DWITH_POSTGRES=ON "$how"
    quiet cmake --build "$work/pg" -j2
    out=$("$work/pg/consumer_pg")
    echo "pmap::postgres consumer (${how%%=*}): $out"
    [ "$out" = "postgres=registered" ]
  done
else
  echo "pmap::postgres not built here (no libpq): its consumer is not tested"
fi
# As a subproject, pmap must not build its tests or examples.
! test -e "$work/by-subdir/pmap/tests"
! test -e "$work/by-subdir/pmap/examples"
