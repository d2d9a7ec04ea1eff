"""Mutants of C sources, found on the real syntax tree (libclang).

Each mutant is one small change at one exact place (a lock deleted with its
unlocks is the one change that spans places), with a stable id
FILE:LINE:COLUMN:OPERATOR:REPLACEMENT (FILE relative to the sources' root).
The operators, those of C mutation tools:

  negate   a condition negated (if, while, do, for, ?:): X -> !(X); a `!` dropped
  cmp      a comparison swapped: < -> <= and >=, == -> !=, ... (boundary and negation)
  arith    + - * / % and their compound assignments swapped, ++ <-> --
  bit      & | ^ << >> and their compound assignments swapped
  logic    && <-> ||
  delete   an expression statement with an effect deleted (a call, an
           assignment, an increment, an atomic operation)
  const    an integer constant changed (0 -> 1, 1 -> 0, n -> n+1), true <-> false;
           also the constant of an object-like macro (#define N 4)
  return   an early return at a function's start: return; return 0;
           return true/false; return SA_EINVAL
  order    a memory order weakened to memory_order_relaxed, and a C11 atomic
           call without _explicit made _explicit with memory_order_relaxed
  lock     pthread_mutex_lock/unlock deleted alone, or a lock with its unlocks

Code inside macro definitions is not mutated (except the constants above):
every edit is checked against the file's own tokens, so a node that comes
from a macro's body, not from the file's text, yields no mutant.
"""

import bisect
import glob
import os
import subprocess
from dataclasses import dataclass

import clang.cindex as ci

K = ci.CursorKind

CMP = {"<": ("<=", ">="), "<=": ("<", ">"), ">": (">=", "<="), ">=": (">", "<"),
       "==": ("!=",), "!=": ("==",)}
ARITH = {"+": ("-",), "-": ("+",), "*": ("/",), "/": ("*",), "%": ("*",)}
BIT = {"&": ("|",), "|": ("&",), "^": ("|",), "<<": (">>",), ">>": ("<<",)}
LOGIC = {"&&": ("||",), "||": ("&&",)}
OPERATORS = (("cmp", CMP), ("arith", ARITH), ("bit", BIT), ("logic", LOGIC))
NAMES = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne",
         "+": "add", "-": "sub", "*": "mul", "/": "div", "%": "mod", "&": "and",
         "|": "or", "^": "xor", "<<": "shl", ">>": "shr", "&&": "and", "||": "or",
         "++": "inc", "--": "dec"}
EFFECTS = {"=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>=", "++", "--"}
STRONG_ORDERS = {"memory_order_consume", "memory_order_acquire", "memory_order_release",
                 "memory_order_acq_rel", "memory_order_seq_cst"}
# C11 atomic operations without _explicit: how many orders _explicit adds.
IMPLICIT_ATOMICS = {"atomic_load": 1, "atomic_store": 1, "atomic_exchange": 1,
                    "atomic_fetch_add": 1, "atomic_fetch_sub": 1, "atomic_fetch_or": 1,
                    "atomic_fetch_and": 1, "atomic_fetch_xor": 1,
                    "atomic_compare_exchange_strong": 2, "atomic_compare_exchange_weak": 2,
                    "atomic_flag_test_and_set": 1, "atomic_flag_clear": 1}
LOCKS = ("pthread_mutex_lock", "pthread_mutex_unlock")
# Result types `return 0;` fits: integers, enums, pointers.
ZERO_RESULTS = {ci.TypeKind.CHAR_U, ci.TypeKind.UCHAR, ci.TypeKind.USHORT, ci.TypeKind.UINT,
                 ci.TypeKind.ULONG, ci.TypeKind.ULONGLONG, ci.TypeKind.CHAR_S,
                 ci.TypeKind.SCHAR, ci.TypeKind.SHORT, ci.TypeKind.INT, ci.TypeKind.LONG,
                 ci.TypeKind.LONGLONG, ci.TypeKind.ENUM, ci.TypeKind.POINTER}
SIGNED_TYPES = {ci.TypeKind.INT, ci.TypeKind.LONG, ci.TypeKind.LONGLONG}


def load_libclang():
    """Point the bindings at libclang: llvm-config's directory, else any installed."""
    if ci.Config.loaded:
        return
    try:
        libdir = subprocess.run(["llvm-config-14", "--libdir"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        libdir = "/usr/lib/llvm-*/lib"
    found = sorted(glob.glob(os.path.join(libdir, "libclang-*.so.1")))
    if found:
        ci.Config.set_library_file(found[-1])


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the sources' root
    line: int
    column: int
    operator: str
    replacement: str
    edits: tuple  # ((start, end, text), ...): byte offsets into the file

    @property
    def id(self):
        return f"{self.path}:{self.line}:{self.column}:{self.operator}:{self.replacement}"

    def apply(self, source):
        for start, end, text in sorted(self.edits, reverse=True):
            source = source[:start] + text.encode() + source[end:]
        return source

    def mutated_line(self, source):
        """The first edited line as it reads in the mutant, stripped; for a
        deleted statement, what is deleted."""
        start, end, _ = self.edits[0]
        if self.operator in ("delete", "lock"):
            unlocks = len(self.edits) - 1
            return "deleted: " + " ".join(source[start:end].decode().split()) + \
                (f" and {unlocks} unlock{'s' * (unlocks > 1)}" if unlocks else "")
        mutated = self.apply(source)
        first = mutated.rfind(b"\n", 0, start) + 1
        shift = sum(len(t.encode()) - (e - s) for s, e, t in self.edits if s < start)
        last = mutated.find(b"\n", start + shift)
        return mutated[first:last if last >= 0 else None].decode().strip()


class SourceFile:
    """A file's bytes and tokens, to check that an edit is on its real text."""

    def __init__(self, tu, name, root):
        with open(name, "rb") as f:
            self.text = f.read()
        self.path = os.path.relpath(name, root)
        extent = tu.get_extent(name, (0, len(self.text)))
        self.tokens = {t.extent.start.offset: t.spelling for t in tu.get_tokens(extent=extent)
                       if t.kind != ci.TokenKind.COMMENT}
        self.offsets = sorted(self.tokens)

    def between(self, start, end):
        """The tokens that start in [start, end)."""
        i, j = bisect.bisect_left(self.offsets, start), bisect.bisect_left(self.offsets, end)
        return [(o, self.tokens[o]) for o in self.offsets[i:j]]

    def matching_paren(self, open_offset):
        depth = 0
        for o in self.offsets[bisect.bisect_left(self.offsets, open_offset):]:
            depth += {"(": 1, ")": -1}.get(self.tokens[o], 0)
            if depth == 0:
                return o
        return None

    def position(self, offset):
        line = self.text.count(b"\n", 0, offset) + 1
        return line, offset - (self.text.rfind(b"\n", 0, offset) + 1) + 1


class Finder:
    """Collects the mutants of one translation unit, in the files under root."""

    def __init__(self, tu, root):
        self.tu, self.root, self.files, self.mutants = tu, os.path.abspath(root), {}, []
        self.conditions = set()
        self.macros = {c.spelling for c in tu.cursor.get_children()
                       if c.kind == K.MACRO_DEFINITION}

    def file_of(self, cursor):
        f = cursor.extent.start.file
        name = os.path.abspath(f.name) if f else None
        if not name or not name.startswith(self.root + os.sep):
            return None
        if name not in self.files:
            self.files[name] = SourceFile(self.tu, name, self.root)
        return self.files[name]

    def add(self, src, operator, replacement, *edits):
        line, column = src.position(edits[0][0])
        self.mutants.append(Mutant(src.path, line, column, operator, replacement, edits))

    def token(self, src, offset, spellings):
        """The token at offset, if it is one of spellings."""
        spelling = src.tokens.get(offset)
        return spelling if spelling in spellings else None

    def run(self):
        for cursor in self.tu.cursor.get_children():
            src = self.file_of(cursor)
            if not src:
                continue
            if cursor.kind == K.MACRO_DEFINITION:
                self.macro_constant(src, cursor)
            elif cursor.kind == K.MACRO_INSTANTIATION:
                self.implicit_atomic(src, cursor)
            elif cursor.kind == K.FUNCTION_DECL and cursor.is_definition():
                self.function(src, cursor)
        return self.mutants

    def function(self, src, fn):
        body = list(fn.get_children())[-1]
        self.early_returns(src, fn, body)
        locks = []
        for cursor in body.walk_preorder():
            if self.file_of(cursor) is not src:
                continue
            visit = getattr(self, "visit_" + cursor.kind.name.lower(), None)
            if visit:
                visit(src, cursor)
            for stmt in statements(cursor):
                self.statement(src, stmt, locks)
        self.lock_pairs(src, locks)

    # ---- negate, cmp, arith, bit, logic -----------------------------------
    def condition(self, src, cond):
        start, end = cond.extent.start.offset, cond.extent.end.offset
        text = src.text[start:end]
        if start >= end or start not in src.tokens or text.count(b"(") != text.count(b")"):
            return
        self.conditions.add((start, end))
        self.add(src, "negate", "cond", (start, start, "!("), (end, end, ")"))

    def visit_if_stmt(self, src, cursor):
        self.condition(src, next(cursor.get_children()))

    visit_while_stmt = visit_if_stmt

    def visit_do_stmt(self, src, cursor):
        self.condition(src, list(cursor.get_children())[-1])

    def visit_conditional_operator(self, src, cursor):
        children = list(cursor.get_children())
        if len(children) == 3:
            self.condition(src, children[0])

    def visit_for_stmt(self, src, cursor):
        semis = [o for o, t in src.between(cursor.extent.start.offset, cursor.extent.end.offset)
                 if t == ";"][:2]
        for child in cursor.get_children():
            if len(semis) == 2 and semis[0] < child.extent.start.offset < semis[1]:
                self.condition(src, child)

    def visit_binary_operator(self, src, cursor):
        operands = list(cursor.get_children())
        if len(operands) != 2:
            return
        lhs, rhs = operands
        between = src.between(lhs.extent.end.offset, rhs.extent.start.offset)
        if len(between) != 1:
            return
        offset, op = between[0]
        assign = op.endswith("=") and op not in CMP  # =, +=, <<=, ...
        base = op[:-1] if assign else op
        for operator, table in OPERATORS:
            if assign and operator not in ("arith", "bit"):
                continue
            for new in table.get(base, ()):
                text = new + "=" if assign else new
                self.add(src, operator, NAMES[new], (offset, offset + len(op), text))

    visit_compound_assignment_operator = visit_binary_operator

    def visit_unary_operator(self, src, cursor):
        operands = list(cursor.get_children())
        if len(operands) != 1:
            return
        child = operands[0]
        prefix = cursor.extent.start.offset < child.extent.start.offset
        offset = cursor.extent.start.offset if prefix else child.extent.end.offset
        op = self.token(src, offset, ("!", "++", "--"))
        extent = (cursor.extent.start.offset, cursor.extent.end.offset)
        if op == "!" and prefix and extent not in self.conditions:
            self.add(src, "negate", "drop", (offset, offset + 1, ""))
        elif op in ("++", "--"):
            new = "--" if op == "++" else "++"
            self.add(src, "arith", NAMES[new], (offset, offset + 2, new))

    # ---- const ------------------------------------------------------------
    def visit_integer_literal(self, src, cursor):
        offset = cursor.extent.start.offset
        spelling = src.tokens.get(offset)
        if spelling in ("true", "false"):
            new = "false" if spelling == "true" else "true"
            self.add(src, "const", new, (offset, offset + len(spelling), new))
        elif spelling and offset + len(spelling) == cursor.extent.end.offset:
            self.integer(src, offset, spelling)

    def integer(self, src, offset, spelling):
        digits = spelling.rstrip("uUlL")
        suffix = spelling[len(digits):]
        if digits.lower().startswith("0x"):
            value, fmt = int(digits, 16), "0x{:x}"
        elif digits.isdigit() and (digits == "0" or not digits.startswith("0")):
            value, fmt = int(digits), "{}"
        else:
            return
        new = {0: 1, 1: 0}.get(value, value + 1)
        text = fmt.format(new) + suffix
        self.add(src, "const", str(new), (offset, offset + len(spelling), text))

    def macro_constant(self, src, macro):
        start = macro.extent.start.offset
        tokens = src.between(start, macro.extent.end.offset)
        name_end = start + len(macro.spelling)
        if src.text[name_end:name_end + 1] == b"(":
            return  # function-like
        values = [t for t in tokens[1:] if t[1] not in ("(", ")")]
        if len(values) == 1 and values[0][1][0].isdigit():
            self.integer(src, *values[0])

    # ---- return -----------------------------------------------------------
    def early_returns(self, src, fn, body):
        brace = body.extent.start.offset
        declarator = src.text[fn.extent.start.offset:brace]
        if src.tokens.get(brace) != "{" or b"noreturn" in declarator:
            return
        kind = fn.result_type.get_canonical().kind
        if kind == ci.TypeKind.VOID:
            values = {"void": ""}
        elif kind == ci.TypeKind.BOOL:
            values = {"true": " true", "false": " false"}
        elif kind in ZERO_RESULTS:
            values = {"0": " 0"}
            if kind in SIGNED_TYPES and "SA_EINVAL" in self.macros:
                values["einval"] = " SA_EINVAL"
        else:
            return
        for name, value in values.items():
            self.add(src, "return", name, (brace + 1, brace + 1, f" return{value};"))

    # ---- order ------------------------------------------------------------
    def visit_decl_ref_expr(self, src, cursor):
        offset = cursor.extent.start.offset
        order = self.token(src, offset, STRONG_ORDERS)
        if order and cursor.spelling == order:
            self.add(src, "order", "relaxed",
                     (offset, offset + len(order), "memory_order_relaxed"))

    def implicit_atomic(self, src, macro):
        start, name = macro.extent.start.offset, macro.spelling
        if name not in IMPLICIT_ATOMICS or src.tokens.get(start) != name:
            return
        opening = start + len(name)
        while src.text[opening:opening + 1].isspace():
            opening += 1
        closing = src.matching_paren(opening) if src.tokens.get(opening) == "(" else None
        if closing is not None:
            args = src.text[opening + 1:closing].decode()
            orders = ", memory_order_relaxed" * IMPLICIT_ATOMICS[name]
            self.add(src, "order", "relaxed",
                     (start, closing + 1, f"{name}_explicit({args}{orders})"))

    # ---- delete, lock -----------------------------------------------------
    def statement(self, src, stmt, locks):
        start, end = stmt.extent.start.offset, stmt.extent.end.offset
        if src.tokens.get(start) is None or not has_effect(stmt, src):
            return
        if stmt.kind == K.CALL_EXPR and stmt.spelling in LOCKS:
            args = list(stmt.get_arguments())
            arg = src.text[args[0].extent.start.offset:args[0].extent.end.offset] if args else b""
            locks.append((stmt.spelling, arg, start, end))
            self.add(src, "lock", "delete", (start, end, ""))
        else:
            self.add(src, "delete", "stmt", (start, end, ""))

    def lock_pairs(self, src, locks):
        """Each lock deleted with the unlocks of the same mutex up to its next lock."""
        for i, (call, arg, start, end) in enumerate(locks):
            if call != "pthread_mutex_lock":
                continue
            edits = [(start, end, "")]
            for other, other_arg, s, e in locks[i + 1:]:
                if other_arg != arg:
                    continue
                if other == "pthread_mutex_lock":
                    break
                edits.append((s, e, ""))
            if len(edits) > 1:
                self.add(src, "lock", "pair", *edits)


def statements(cursor):
    """The expressions of cursor that stand as statements."""
    children = list(cursor.get_children())
    if cursor.kind == K.COMPOUND_STMT:
        body = children
    elif cursor.kind == K.IF_STMT:
        body = children[1:]
    elif cursor.kind in (K.WHILE_STMT, K.FOR_STMT, K.CASE_STMT, K.DEFAULT_STMT, K.LABEL_STMT):
        body = children[-1:]
    elif cursor.kind == K.DO_STMT:
        body = children[:1]
    else:
        body = []
    return [c for c in body if c.kind.is_expression()]


def has_effect(stmt, src):
    """A call, an assignment, an increment or a C11 atomic operation."""
    tokens = [t for _, t in src.between(stmt.extent.start.offset, stmt.extent.end.offset)]
    return (any(t in EFFECTS or t.startswith("atomic_") for t in tokens) or
            any(c.kind == K.CALL_EXPR for c in stmt.walk_preorder()))


def find_mutants(sources, root, args=()):
    """The mutants of the C files `sources` and of the files under `root`
    they include, sorted, each once."""
    load_libclang()
    index = ci.Index.create()
    found = {}
    for name in sources:
        tu = index.parse(name, args=["-std=c11", *args],
                         options=ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD)
        errors = [str(d) for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error]
        if errors:
            raise RuntimeError(f"{name} does not parse: {errors[0]}")
        for mutant in Finder(tu, root).run():
            found.setdefault(mutant.id, mutant)
    return sorted(found.values(), key=lambda m: (m.path, m.edits[0][0], m.operator,
                                                  m.replacement))
