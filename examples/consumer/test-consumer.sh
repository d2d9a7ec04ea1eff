#!/bin/sh
# Packaging test: install the reference from BUILD into a fresh prefix, then
# build and run the consumer as a separate project, once through the CMake
# package (find_package) and once through pkg-config.
#
#   test-consumer.sh BUILD_DIR WORK_DIR C_COMPILER
set -eu
if [ $# -ne 3 ]; then
  echo "usage: test-consumer.sh BUILD_DIR WORK_DIR C_COMPILER" >&2
  exit 2
fi
build="$1"
work="$2"
cc="$3"
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"

cmake --install "$build" --prefix "$prefix" >"$work/install.log"
for f in include/smartasync.h lib*/pkgconfig/smartasync.pc lib*/cmake/smartasync/smartasyncConfig.cmake; do
  # shellcheck disable=SC2086 # the glob is the point
  ls "$prefix"/$f >/dev/null || { echo "not installed: $f"; exit 1; }
done

echo "== find_package(smartasync)"
cmake -S "$here" -B "$work/cmake" -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" \
  >"$work/cmake.log"
cmake --build "$work/cmake" >>"$work/cmake.log"
"$work/cmake/consumer"

echo "== pkg-config smartasync"
PKG_CONFIG_PATH=$(dirname "$(ls "$prefix"/lib*/pkgconfig/smartasync.pc)")
export PKG_CONFIG_PATH
echo "version $(pkg-config --modversion smartasync)"
# shellcheck disable=SC2046 # flags are words
"$cc" -Wall -Wextra -Werror -o "$work/consumer-pc" "$here/consumer.c" \
  $(pkg-config --cflags --libs smartasync)
"$work/consumer-pc"
