#!/bin/sh
# Packaging test: configure the library alone (-DBUILD_TESTING=OFF) with
# Criterion and Google Benchmark out of sight, as on a machine that has only
# libuv, install it into a fresh prefix, then build and run the consumer as a
# separate project: through the CMake package (find_package), through
# pkg-config, and with -std=c11 and the POSIX feature macro the header needs.
#
#   test-consumer.sh SOURCE_DIR WORK_DIR C_COMPILER
set -eu
if [ $# -ne 3 ]; then
  echo "usage: test-consumer.sh SOURCE_DIR WORK_DIR C_COMPILER" >&2
  exit 2
fi
source="$1"
work="$2"
cc="$3"
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work/pkgconfig"
prefix="$work/prefix"

echo "== the library alone, with only libuv in sight"
cp "$(pkg-config --variable=pcfiledir libuv)/libuv.pc" "$work/pkgconfig/"
PKG_CONFIG_LIBDIR="$work/pkgconfig" cmake -S "$source" -B "$work/library" \
  -DCMAKE_C_COMPILER="$cc" -DBUILD_TESTING=OFF -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON \
  --no-warn-unused-cli \
  >"$work/library.log"
cmake --build "$work/library" >>"$work/library.log"
cmake --install "$work/library" --prefix "$prefix" >"$work/install.log"
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

echo "== -std=c11 -D_POSIX_C_SOURCE=200809L (libuv's header needs POSIX)"
# shellcheck disable=SC2046 # flags are words
"$cc" -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -o "$work/consumer-c11" \
  "$here/consumer.c" $(pkg-config --cflags --libs smartasync)
"$work/consumer-c11"
