#!/bin/sh
# Integration test of the data pipeline against real servers: an HTTP server
# (fixture_server.py, Python's http.server) and a PostgreSQL cluster started
# here on a private Unix socket, plus SQLite. Both are stopped on any exit.
#
#   test-pipeline.sh PIPELINE TEST_OPS WORK_DIR
#
# Checks, in sync and in async mode, with PostgreSQL and with SQLite:
#   - the files on disk are byte for byte the served ones, and the rows in
#     the database are the expected ones, the same in both modes;
#   - a 32 MiB download never holds the body in memory (peak RSS);
#   - server down, HTTP 500 (listing or file), a truncated body, a listing
#     that is not JSON, and rows breaking a constraint each fail with their
#     own error code, leave no partial file and write no row;
#   - the ops alone (TEST_OPS): bad input, and downloads stopped at any
#     point by a deadline or a cancel leave nothing behind;
#   - under valgrind, no leak and no memory error, on success and failure.
set -eu
if [ $# -ne 3 ]; then
  echo "usage: test-pipeline.sh PIPELINE TEST_OPS WORK_DIR" >&2
  exit 2
fi
pipeline="$1"
test_ops="$2"
work="$3"
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work/www/api" "$work/www/files"

# ---- servers ---------------------------------------------------------------

pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/sa-pipeline-pg.XXXXXX")
server_pid=""
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  [ ! -f "$pg_dir/data/postmaster.pid" ] ||
    as_postgres pg_ctl -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# PostgreSQL refuses to run as root: run it as the postgres user then.
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$pg_bin" ] || { echo "PostgreSQL server binaries not found (Debian package postgresql)"; exit 1; }
PATH="$pg_bin:$PATH"
[ "$(id -u)" -ne 0 ] || chown postgres "$pg_dir"
as_postgres initdb -D "$pg_dir/data" -A trust -U postgres -E UTF8 --no-sync >"$work/initdb.log"
as_postgres pg_ctl -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
  -o "-k $pg_dir -c listen_addresses= -F" start >"$work/pg_ctl.log"
pg="host=$pg_dir dbname=postgres user=postgres"
psql "$pg" -q -v ON_ERROR_STOP=1 -f "$here/pipeline.sql"

python3 "$here/fixture_server.py" "$work/www" "$work/port" 2>"$work/http.log" &
server_pid=$!
i=0
while [ ! -f "$work/port" ]; do
  i=$((i + 1))
  [ "$i" -lt 100 ] || { echo "the HTTP server did not start"; cat "$work/http.log"; exit 1; }
  sleep 0.1
done
base="http://127.0.0.1:$(cat "$work/port")"
echo "servers: HTTP $base, PostgreSQL on $pg_dir"

# ---- fixtures --------------------------------------------------------------

printf 'hello, pipeline\n' >"$work/www/files/hello.txt"
seq 1 20000 | sed 's/.*/&,row &/' >"$work/www/files/data.csv"
head -c 33554432 /dev/urandom >"$work/www/files/big.bin"
listing() { # listing NAME "id name path" ...
  name="$1"
  shift
  {
    printf '{"files": ['
    sep=""
    for entry in "$@"; do
      set -- $entry
      printf '%s\n  {"id": %s, "name": "%s", "path": "%s"}' "$sep" "$1" "$2" "$3"
      sep=","
    done
    printf '\n]}\n'
  } >"$work/www/api/$name"
}
listing files.json "1 hello.txt /files/hello.txt" "2 data.csv /files/data.csv" \
  "3 big.bin /files/big.bin"
listing fail-500.json "1 hello.txt /files/hello.txt" "2 data.csv /status/500/files/data.csv"
listing truncated.json "1 hello.txt /files/hello.txt" "3 big.bin /truncated/files/big.bin"
listing duplicate.json "1 hello.txt /files/hello.txt" "1 data.csv /files/data.csv"
echo 'files: hello.txt' >"$work/www/api/not-json.json"

expected_rows="1|hello.txt|$base/files/hello.txt|$(wc -c <"$work/www/files/hello.txt")
2|data.csv|$base/files/data.csv|$(wc -c <"$work/www/files/data.csv")
3|big.bin|$base/files/big.bin|$(wc -c <"$work/www/files/big.bin")"

# ---- helpers ---------------------------------------------------------------

failures=0
check() { # check DESCRIPTION COMMAND...: run COMMAND, count a failure
  description="$1"
  shift
  if "$@"; then
    echo "  ok    $description"
  else
    echo "  FAIL  $description"
    failures=$((failures + 1))
  fi
}
target() { # target pg|sqlite
  if [ "$1" = pg ]; then echo "$pg"; else echo "$work/pipeline.sqlite"; fi
}
rows() { # rows pg|sqlite: the table, one "id|name|url|bytes" line per row
  if [ "$1" = pg ]; then
    psql "$pg" -At -c "SELECT id, name, url, bytes FROM files ORDER BY id"
  elif [ -f "$work/pipeline.sqlite" ]; then
    sqlite3 "$work/pipeline.sqlite" "SELECT id, name, url, bytes FROM files ORDER BY id"
  fi
}
reset_db() {
  if [ "$1" = pg ]; then psql "$pg" -q -c "TRUNCATE files"; else rm -f "$work/pipeline.sqlite"; fi
}
# run_pipeline NAME MODE DB API [OPTION...]: runs it with out dir $work/NAME,
# output in $work/NAME.log, peak RSS (KiB) in $work/NAME.rss; returns its status.
run_pipeline() {
  run_name="$1" run_mode="$2" run_db="$3" run_api="$4"
  shift 4
  mkdir -p "$work/$run_name"
  # shellcheck disable=SC2086 # $under is a command line or nothing
  python3 - "$work/$run_name.rss" $under "$pipeline" --api "$run_api" --out "$work/$run_name" \
    --db "$(target "$run_db")" --mode "$run_mode" "$@" >"$work/$run_name.log" 2>&1 <<'PY'
import resource, subprocess, sys
status = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(status)
PY
}
same_files() { # same_files DIR: DIR holds exactly the served files
  [ "$(ls "$1")" = "$(printf 'big.bin\ndata.csv\nhello.txt')" ] &&
    cmp -s "$1/hello.txt" "$work/www/files/hello.txt" &&
    cmp -s "$1/data.csv" "$work/www/files/data.csv" &&
    cmp -s "$1/big.bin" "$work/www/files/big.bin"
}
rows_are() { [ "$(rows "$1")" = "$2" ]; }
no_partial_files() { [ -z "$(find "$1" -name '*.part')" ]; }
says() { grep -q "$2" "$work/$1.log"; }
fails() { ! run_pipeline "$@"; }
logged() { # logged LOG COMMAND...: run COMMAND into LOG, shown if it fails
  log="$1"
  shift
  "$@" >"$log" 2>&1 || { sed 's/^/    /' "$log"; false; }
}
fails_cleanly() {
  run_pipeline "$@" && return 1
  [ $? -eq 1 ] || { sed 's/^/    /' "$work/$1.log"; false; }
}
succeeds() { run_pipeline "$@" || { sed 's/^/    /' "$work/$1.log"; false; }; }
absent() { [ ! -e "$1" ]; }
small_rss() { [ "$(cat "$work/$1.rss")" -lt 24576 ]; } # KiB, for a 32 MiB body

# ---- the pipeline, in both modes, with both databases ----------------------

under="" # the pipeline runs as it is, or under valgrind (the last part)

for db in pg sqlite; do
  for mode in sync async; do
    name="ok-$db-$mode"
    echo "$name"
    reset_db "$db"
    check "runs" succeeds "$name" "$mode" "$db" "$base/api/files.json"
    check "files on disk are the served bytes" same_files "$work/$name"
    check "rows in the database" rows_are "$db" "$expected_rows"
    check "peak RSS under 24 MiB for a 32 MiB download ($(cat "$work/$name.rss") KiB)" \
      small_rss "$name"
  done
  echo "again-$db (the rows are there already)"
  check "fails" fails "again-$db" sync "$db" "$base/api/files.json"
  check "with the duplicate-key code" says "again-$db" "File exists"
  check "rows unchanged" rows_are "$db" "$expected_rows"
done

# ---- failures: each its own code, nothing half-written ---------------------

down_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# fails_with CASE API PATTERN: with $db and $mode, the run fails, its error
# line matches PATTERN, and it wrote no row and no partial file.
fails_with() {
  case_name="$1-$db-$mode"
  echo "$case_name"
  check "fails" fails "$case_name" "$mode" "$db" "$2"
  check "says: $3" says "$case_name" "$3"
  check "no row" rows_are "$db" ""
  check "no partial file" no_partial_files "$work/$case_name"
}
no_file() { [ -z "$(ls "$work/$case_name")" ]; }
for db in pg sqlite; do
  for mode in sync async; do
    reset_db "$db"
    fails_with down "http://127.0.0.1:$down_port/api/files.json" "fetch_json .*Connection refused"
    check "no file" no_file
    fails_with listing-500 "$base/status/500/api/files.json" "fetch_json .*Remote I/O error (HTTP 500"
    check "no file" no_file
    fails_with file-500 "$base/api/fail-500.json" "download_file .*data.csv: Remote I/O error (HTTP 500"
    check "the failed file is absent" absent "$work/$case_name/data.csv"
    fails_with truncated "$base/api/truncated.json" \
      "big.bin: Protocol error (the connection closed inside"
    check "the truncated file is absent" absent "$work/$case_name/big.bin"
    fails_with not-json "$base/api/not-json.json" "Bad message (the body is not JSON"
    # The rows go in together or not at all: the first one was fine.
    fails_with duplicate "$base/api/duplicate.json" "save_rows .*File exists"
  done
done

for mode in sync async; do
  name="deadline-$mode"
  echo "$name (the API answers after 5 s; the deadline is 300 ms)"
  started=$(date +%s)
  check "fails" fails "$name" "$mode" sqlite "$base/slow/api/files.json" --timeout-ms 300
  check "with the time-out code" says "$name" "fetch_json .*the deadline passed first"
  check "at the deadline, not when the server answers" [ $(($(date +%s) - started)) -lt 4 ]
done

echo "the ops alone"
mkdir -p "$work/ops"
check "bad input, deadlines and cancels ($(basename "$work")/ops.log)" \
  logged "$work/ops.log" "$test_ops" "$base" "$work/ops"

# ---- no leak, no memory error: under valgrind -------------------------------

under="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect \
--show-leak-kinds=definite,indirect --error-exitcode=9"
for db in pg sqlite; do
  for mode in sync async; do
    reset_db "$db"
    name="valgrind-$db-$mode"
    echo "$name"
    check "runs clean" succeeds "$name" "$mode" "$db" "$base/api/files.json"
    for fault in truncated fail-500 duplicate; do
      check "$fault: fails with status 1, not valgrind's 9" fails_cleanly "$name-$fault" "$mode" "$db" \
        "$base/api/$fault.json"
    done
  done
done
for mode in sync async; do
  echo "valgrind-deadline-$mode"
  check "stopped at the deadline, fails cleanly" fails_cleanly "valgrind-deadline-$mode" "$mode" \
    sqlite "$base/slow/api/files.json" --timeout-ms 300
done
echo "valgrind: the ops alone"
mkdir -p "$work/ops-valgrind"
# shellcheck disable=SC2086 # $under is a command line
check "bad input, deadlines and cancels, under valgrind" \
  logged "$work/ops-valgrind.log" $under "$test_ops" "$base" "$work/ops-valgrind"
under=""

echo "database down"
as_postgres pg_ctl -D "$pg_dir/data" -m fast -w stop >/dev/null
check "fails" fails db-down sync pg "$base/api/files.json"
check "connection refused" says db-down "save_rows .*Connection refused"

if [ "$failures" -ne 0 ]; then
  echo "$failures checks failed; logs in $work"
  exit 1
fi
echo "all checks passed"
