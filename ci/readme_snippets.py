#!/usr/bin/env python3
"""Compile and run README.md's C blocks, so that what users copy works.

  readme_snippets.py README.md --cc gcc [--cc clang] [--keep DIR] -- CC_ARGS...

Every ```c block of the README must come right after a marker, an HTML
comment (invisible on GitHub) ending on the line above its fence:

  <!-- snippet: top -->
      file-scope code: includes, types, functions
  <!-- snippet: plain; check: EXPR; prints: TEXT -->
      statements run from plain code (sync context)
  <!-- snippet: loop; check: EXPR; prints: TEXT -->
      statements run inside a callback of a loop run with sa_run (async
      context); the loop then runs until nothing is left on it, so the
      continuations the statements attached run too

The blocks form one program, in README order: top blocks as they are, each
statement block as the body of a function of its own, which main() calls in
README order, in the block's context. `check:` (optional) is a C expression
evaluated after the block's statements, in their scope; streq(p, "text")
compares a string. `prints:` (optional) is all that the block's run writes
to stdout, continuations included: lines separated by \\n; without it, the
run must print nothing. Fields are separated by `;`, so neither holds one.

The program is compiled with each --cc (-std=c11, POSIX 2008 and
-Wall -Wextra -Werror at -O2) and the CC_ARGS (include directories, the
library under test, libuv), and each build is run in an empty directory
holding app.conf ("port = 8080", the file the README's blocking function
reads), under a time limit. Compiler messages name the README's lines.
Exit status 0 only if every block compiled and every run did as the
README says. A ```c block without a marker, or a marker without a block,
is an error: no block can escape the check.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

CFLAGS = ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror", "-O2", "-g"]
RUN_TIMEOUT_S = 30
COMPILE_TIMEOUT_S = 120
CONFIG_FILE = ("app.conf", "port = 8080\n")
GENERATED = "readme_snippets.c"

FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^`\s]*)")
MARKER = re.compile(r"<!--\s*snippet:(.*?)-->", re.S)
RUN_DELIMITER = re.compile(r"^==> (\d+|end)\n", re.M)
KINDS = ("top", "plain", "loop")


class Block:
    def __init__(self, marker_line, kind, check, prints):
        self.marker_line = marker_line  # where its marker ends, 1-based
        self.line = marker_line + 2     # its first line of code
        self.kind = kind                # one of KINDS
        self.check = check              # a C expression, or None
        self.prints = prints            # the stdout its run must write
        self.code = None


def fail(message):
    sys.exit(f"readme-snippets: {message}")


def parse_marker(text, line, where):
    """The Block a marker's text announces, its code to come."""
    fields = [f.strip() for f in text.split(";")]
    kind, check, prints = fields[0], None, ""
    if kind not in KINDS:
        fail(f"{where}: marker kind {kind!r}, expected one of {', '.join(KINDS)}")
    for field in fields[1:]:
        key, _, value = (part.strip() for part in field.partition(":"))
        if key == "check" and value:
            check = " ".join(value.split())  # a marker may span lines
        elif key == "prints" and value:
            prints = value.replace("\\n", "\n") + "\n"
        else:
            fail(f"{where}: marker field {field!r}, expected check: EXPR or prints: TEXT")
    if kind == "top" and (check or prints):
        fail(f"{where}: a top block runs nothing: no check: or prints:")
    return Block(line, kind, check, prints)


def marker_before(lines, fence_index):
    """The text of the marker ending on the line above the fence, and that
    line (1-based); None if there is none."""
    end = fence_index - 1
    if end < 0 or not lines[end].rstrip().endswith("-->"):
        return None
    start = end
    while start > 0 and "<!--" not in lines[start]:
        start -= 1
    m = MARKER.search("\n".join(lines[start:end + 1]))
    return (m.group(1), end + 1) if m else None


def parse(readme, name):
    """Every ```c block of `readme` (its text; `name`, its path), in order."""
    lines = readme.split("\n")
    blocks = []
    fence, block = None, None  # the open fence, and the ```c block it opened
    for i, line in enumerate(lines):
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                    and not m.group(2):
                if block:
                    block.code = "\n".join(lines[block.line - 1:i])
                    blocks.append(block)
                fence, block = None, None
            continue
        if not m:
            continue
        fence = m.group(1)
        if m.group(2).lower() == "c":
            marker = marker_before(lines, i)
            if marker is None:
                fail(f"{name}:{i + 1}: a ```c block without a marker "
                     "(<!-- snippet: top|plain|loop ... --> on the line above)")
            block = parse_marker(*marker, f"{name}:{marker[1]}")
    if fence:
        fail(f"{name}: a code block is not closed")
    announced = {b.marker_line for b in blocks}
    for m in MARKER.finditer(readme):
        line = readme.count("\n", 0, m.end()) + 1
        if line not in announced:
            fail(f"{name}:{line}: a snippet marker not right above a ```c block")
    return blocks


def c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


HARNESS = r"""
/* The harness: runs each statement block in its context, in README order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void snippet_check(int ok, const char *what) {
  if (!ok) {
    fflush(stdout);
    fprintf(stderr, "readme-snippets: check failed: %s\n", what);
    exit(1);
  }
}

int streq(const void *s, const char *text) { return s && strcmp(s, text) == 0; }

static void (*snippet_body)(void);

static void snippet_in_callback(uv_timer_t *timer) {
  uv_close((uv_handle_t *)timer, NULL);
  snippet_check(sa_current_loop() == timer->loop, "the block runs in async context");
  snippet_body();
}

static void snippet_run_plain(int line, void (*body)(void)) {
  printf("==> %d\n", line);
  snippet_check(sa_current_loop() == NULL, "the block runs in sync context");
  body();
}

static void snippet_run_in_loop(int line, void (*body)(void)) {
  uv_loop_t loop;
  uv_timer_t timer;
  printf("==> %d\n", line);
  snippet_check(uv_loop_init(&loop) == 0, "uv_loop_init");
  snippet_check(uv_timer_init(&loop, &timer) == 0, "uv_timer_init");
  snippet_check(uv_timer_start(&timer, snippet_in_callback, 0, 0) == 0, "uv_timer_start");
  snippet_body = body;
  snippet_check(sa_run(&loop, UV_RUN_DEFAULT) == 0, "sa_run runs the loop until it is empty");
  snippet_check(sa_loop_close(&loop) == 0, "sa_loop_close: every call on the loop delivered");
}
"""


class Source:
    """The generated C file, with #line directives naming the README's lines."""

    def __init__(self, readme):
        self.readme = readme
        self.lines = []

    def add(self, text):
        self.lines.extend(text.split("\n"))

    def from_readme(self, line, text):
        self.add(f'#line {line} {c_string(self.readme)}\n{text}')
        self.add(f'#line {len(self.lines) + 2} "{GENERATED}"')

    def text(self):
        return "\n".join(self.lines) + "\n"


def program(readme, blocks):
    """The C program of the blocks: they, in order, then the harness and main()."""
    src = Source(readme)
    src.add("/* Generated by ci/readme_snippets.py from README.md's C blocks. */\n"
            "void snippet_check(int ok, const char *what);\n"
            "int streq(const void *s, const char *text);")
    runs = []
    for b in blocks:
        if b.kind == "top":
            src.from_readme(b.line, b.code)
            continue
        name = f"snippet_at_{b.line}"
        src.add(f"static void {name}(void) {{")
        src.from_readme(b.line, b.code)
        if b.check:
            what = f"{readme}:{b.marker_line}: {b.check}"
            src.from_readme(b.marker_line, f"snippet_check({b.check}, {c_string(what)});")
        src.add("}")
        runner = "snippet_run_plain" if b.kind == "plain" else "snippet_run_in_loop"
        runs.append(f"  {runner}({b.line}, {name});")
    src.add(HARNESS)
    src.add("int main(void) {\n" + "\n".join(runs) + "\n"
            "  snippet_check(sa_thread_cleanup() == 0, \"sa_thread_cleanup\");\n"
            "  printf(\"==> end\\n\");\n"
            "  return 0;\n}")
    return src.text()


def compile_program(cc, source, exe, cc_args):
    """None if `cc` built `exe`, else what it said."""
    rpaths = {os.path.dirname(os.path.abspath(a)) for a in cc_args if re.search(r"\.so(\.|$)", a)}
    cmd = [cc, *CFLAGS, source, "-o", exe, *cc_args, "-pthread",
           *(f"-Wl,-rpath,{d}" for d in sorted(rpaths))]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    except FileNotFoundError:
        return "not found"
    except subprocess.TimeoutExpired:
        return f"no result after {COMPILE_TIMEOUT_S} s"
    if r.returncode != 0:
        return f"{' '.join(cmd)}\n{r.stdout}{r.stderr}"
    return None


def run_program(exe, workdir, readme, blocks):
    """None if the run did what the README says, else what went wrong."""
    name, text = CONFIG_FILE
    with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
        f.write(text)
    try:
        r = subprocess.run([exe], cwd=workdir, capture_output=True, text=True,
                           timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"no end after {RUN_TIMEOUT_S} s"
    if r.returncode != 0:
        return f"exit status {r.returncode}\n{r.stdout}{r.stderr}"
    # stdout: a delimiter before each run, then "end"; between them, what it printed.
    parts = RUN_DELIMITER.split(r.stdout)
    got = list(zip(parts[1::2], parts[2::2]))
    expected = [(str(b.line), b.prints) for b in blocks if b.kind != "top"]
    expected.append(("end", ""))
    if parts[0] or [w for w, _ in got] != [w for w, _ in expected]:
        return f"the runs are not those of the README's blocks:\n{r.stdout}"
    errors = [f"{readme}:{where}: printed {out!r}, the README says {want!r}"
              for (where, out), (_, want) in zip(got, expected) if out != want]
    return "\n".join(errors) or None


def check(readme_path, compilers, cc_args, workdir):
    """Build and run the README's program with each compiler; True if all passed."""
    with open(readme_path, encoding="utf-8") as f:
        blocks = parse(f.read(), readme_path)
    source = os.path.join(workdir, GENERATED)
    with open(source, "w", encoding="utf-8") as f:
        f.write(program(readme_path, blocks))
    runs = sum(b.kind != "top" for b in blocks)
    failed = False
    for cc in compilers:
        exe = os.path.abspath(os.path.join(workdir, f"readme-{os.path.basename(cc)}"))
        error = compile_program(cc, source, exe, cc_args)
        if error is None:
            rundir = os.path.join(workdir, f"run-{os.path.basename(cc)}")
            os.makedirs(rundir, exist_ok=True)
            error = run_program(exe, rundir, readme_path, blocks)
        if error:
            failed = True
            print(f"FAIL {cc}: {error}")
        else:
            print(f"ok   {cc}: {len(blocks)} blocks compiled, {runs} run as the README says")
    return not failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 usage="%(prog)s README.md --cc CC [--cc CC] [--keep DIR] "
                                       "-- CC_ARGS...")
    ap.add_argument("readme")
    ap.add_argument("--cc", action="append", required=True, help="a compiler (repeatable)")
    ap.add_argument("--keep", metavar="DIR", help="build in DIR and keep it (default: a "
                    "temporary directory)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:split])
    args.cc_args = argv[split + 1:]  # include directories, libraries
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        ok = check(args.readme, args.cc, args.cc_args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="readme-snippets-") as workdir:
            ok = check(args.readme, args.cc, args.cc_args, workdir)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
