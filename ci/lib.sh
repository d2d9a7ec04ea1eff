# Shared by the ci/ scripts (sourced, POSIX sh).

# Install the Debian packages that are missing; nothing if all are there.
# Without root, and without a sudo that needs no password, print the line
# that installs them and fail before any work is done.
ensure_packages() {
  missing=""
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing="$missing $pkg"
  done
  [ -z "$missing" ] && return 0
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
      echo "missing Debian packages:$missing" >&2
      echo "install them as root, then run this again:" >&2
      echo "  apt-get install -y --no-install-recommends$missing" >&2
      return 1
    fi
    sudo="sudo -n"
  fi
  echo "installing:$missing"
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
SA_MUTATION_PACKAGES="python3-clang-14 procps"

jobs() { nproc 2>/dev/null || echo 2; }

# tool_options TOOL: the options of a checking tool (tsan, valgrind,
# memcheck) kept in stress/detectors.options, one per line.
tool_options() { sed -n "s/^$1 //p" stress/detectors.options; }

# The directory the script was started from (each script sets sa_caller_dir
# before it changes to the checkout): paths on its command line are relative
# to it.
# from_caller PATH: PATH made absolute against that directory.
from_caller() {
  case "$1" in
    /*) echo "$1" ;;
    *) echo "${sa_caller_dir:-$PWD}/$1" ;;
  esac
}

# The implementation under test, as --impl, --impl-tsan and --include name
# it: a CMake target or a library path (the reference by default), the same
# library built with -fsanitize=thread (TSan sees only instrumented code),
# and the directory of its smartasync.h.
impl=smartasync
impl_tsan=""
include=""

# impl_option OPTION VALUE: keep the VALUE of --impl, --impl-tsan or
# --include; fails on any other OPTION. A value with a slash, or naming a
# file, is a path; otherwise --impl names a CMake target.
impl_option() {
  case "$1" in
    --impl)
      case "$2" in
        */*) impl=$(from_caller "$2") ;;
        *) if [ -e "$(from_caller "$2")" ]; then impl=$(from_caller "$2"); else impl="$2"; fi ;;
      esac ;;
    --impl-tsan) impl_tsan=$(from_caller "$2") ;;
    --include) include=$(from_caller "$2") ;;
    *) return 1 ;;
  esac
}

# impl_is_library: whether the implementation is a library built outside
# the project (not a CMake target of this tree).
impl_is_library() {
  case "$impl" in /*) return 0 ;; *) return 1 ;; esac
}

# tsan_impl: the implementation for a TSan tree: a target of this tree is
# built instrumented; a library built outside must be given instrumented
# (--impl-tsan). Empty if there is none.
tsan_impl() {
  if impl_is_library; then echo "$impl_tsan"; else echo "$impl"; fi
}

# cmake_impl BUILD_DIR [ARG...]: configure BUILD_DIR for the implementation
# under test, with the other CMake arguments ARG.
cmake_impl() {
  dir="$1"
  shift
  cmake -S . -B "$dir" -DSA_IMPL="$impl" ${include:+"-DSA_IMPL_INCLUDE_DIR=$include"} "$@"
}

# Why TSan runs are not made for a library given without --impl-tsan.
tsan_not_instrumented="the library is not instrumented: give it built with -fsanitize=thread \
(--impl-tsan)"

# cmake_impl_tsan BUILD_DIR [ARG...]: as cmake_impl, for a TSan tree.
cmake_impl_tsan() {
  dir="$1"
  shift
  cmake -S . -B "$dir" -DSA_IMPL="$(tsan_impl)" ${include:+"-DSA_IMPL_INCLUDE_DIR=$include"} \
    -DCMAKE_C_COMPILER=clang -DSA_TSAN=ON "$@"
}
