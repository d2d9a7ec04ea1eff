# Shared by the ci/ scripts (sourced, POSIX sh).

# Install the Debian packages that are missing; nothing if all are there.
ensure_packages() {
  missing=""
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing="$missing $pkg"
  done
  [ -z "$missing" ] && return 0
  echo "installing:$missing"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
}

# What building and testing the project needs (the ThreadSanitizer runtime,
# libclang-rt-14-dev, is only a Recommends of clang).
SA_PACKAGES="build-essential cmake pkg-config patch libuv1-dev libcriterion-dev libbenchmark-dev \
valgrind strace clang libclang-rt-14-dev python3 libxml2-utils"

# What the data-pipeline example and its integration test need: its libraries,
# and the servers and clients the test starts and queries.
SA_EXAMPLE_PACKAGES="libhttp-parser-dev libjansson-dev libpq-dev libsqlite3-dev \
postgresql postgresql-client sqlite3"

# What ci/mutation needs besides: libclang's Python bindings.
SA_MUTATION_PACKAGES="python3-clang-14"

jobs() { nproc 2>/dev/null || echo 2; }

# tool_options TOOL: the options of a checking tool (tsan, valgrind,
# memcheck) kept in stress/detectors.options, one per line.
tool_options() { sed -n "s/^$1 //p" stress/detectors.options; }

# The implementation under test, as --impl and --include name it: a CMake
# target or a library path (the reference by default), and the directory of
# its smartasync.h.
impl=smartasync
include=""

# impl_option OPTION VALUE: keep the VALUE of --impl or --include; fails on
# any other OPTION.
impl_option() {
  case "$1" in
    --impl) impl="$2" ;;
    --include) include="$2" ;;
    *) return 1 ;;
  esac
}

# cmake_impl BUILD_DIR [ARG...]: configure BUILD_DIR for the implementation
# under test, with the other CMake arguments ARG.
cmake_impl() {
  dir="$1"
  shift
  cmake -S . -B "$dir" -DSA_IMPL="$impl" ${include:+"-DSA_IMPL_INCLUDE_DIR=$include"} "$@"
}
