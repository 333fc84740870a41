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
# pmapctl is installed beside the library, and reads what the consumer wrote.
out=$("$work/prefix/bin/pmapctl" get "sqlite:$work/a.db" answer)
echo "installed pmapctl get answer: $out"
[ "$out" = "42" ]

quiet cmake -S "$src/tests/install/consumer" -B "$work/by-subdir" -DPMAP_SOURCE_DIR="$src"
quiet cmake --build "$work/by-subdir" -j2
out=$("$work/by-subdir/consumer" "$work/b.db")
echo "add_subdirectory consumer: $out"
[ "$out" = "answer=42" ]
# The optional components, both ways, when this machine builds them.
for component in postgres redis; do
  targets=pmap${component^}Targets.cmake
  if [ -z "$(find "$work/prefix" -name "$targets")" ]; then
    echo "pmap::$component not built here (no client library): its consumer is not tested"
    continue
  fi
  for how in "-DCMAKE_PREFIX_PATH=$work/prefix" "-DPMAP_SOURCE_DIR=$src"; do
    rm -rf "$work/$component"
    quiet cmake -S "$src/tests/install/consumer" -B "$work/$component" "-DWITH_${component^^}=ON" "$how"
    quiet cmake --build "$work/$component" -j2
    out=$("$work/$component/consumer_$([ $component = postgres ] && echo pg || echo redis)")
    echo "pmap::$component consumer (${how%%=*}): $out"
    [ "$out" = "$component=registered" ]
  done
done
# As a subproject, pmap must not build its tests or examples.
! test -e "$work/by-subdir/pmap/tests"
! test -e "$work/by-subdir/pmap/examples"
! test -e "$work/by-subdir/pmap/tools"
