"""The mutation tool's own test (CTest: integration/mutation-tool).

Guards ci/mutator.py and ci/mutation.py: the mutants of a small C file
(mutation-fixture/) are exactly those expected, with their exact text; every
operator is there; each mutant applies and compiles, except the one that
cannot; and `ci/mutation --list` works on the real sources under
reference/src/. Run it with Debian's python3 (python3-clang-14).
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest

CI = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, CI)
sys.dont_write_bytecode = True  # nothing written into the source tree
import mutator  # noqa: E402

FIXTURE = os.path.join(CI, "mutation-fixture")
OPERATORS = {"negate", "cmp", "arith", "bit", "logic", "delete", "const", "return", "order",
             "lock"}
NOT_VIABLE = {"fixture.c:48:12:arith:add"}  # the sum of two pointers
ID = re.compile(r"[\w./-]+\.[ch]:\d+:\d+:[a-z]+:[\w-]+")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def compiles(directory):
    return subprocess.run(["gcc", "-std=c11", "-w", "-c", "fixture.c", "-o", "/dev/null"],
                          cwd=directory, capture_output=True).returncode == 0


class Fixture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mutants = mutator.find_mutants([os.path.join(FIXTURE, "fixture.c")], FIXTURE)
        cls.sources = {n: read(os.path.join(FIXTURE, n)) for n in ("fixture.c", "fixture.h")}

    def test_the_expected_mutants_with_their_text(self):
        listing = [f"{m.id}  {m.mutated_line(self.sources[m.path])}" for m in self.mutants]
        with open(os.path.join(FIXTURE, "expected.txt")) as f:
            self.assertEqual(listing, f.read().splitlines())

    def test_every_operator(self):
        self.assertEqual({m.operator for m in self.mutants}, OPERATORS)

    def test_each_mutant_changes_its_file_and_compiles(self):
        with tempfile.TemporaryDirectory() as tmp:
            self.assertTrue(compiles(self.copy(tmp, {})), "the fixture itself must compile")
            for m in self.mutants:
                with self.subTest(m.id):
                    mutated = m.apply(self.sources[m.path])
                    self.assertNotEqual(mutated, self.sources[m.path])
                    self.assertEqual(compiles(self.copy(tmp, {m.path: mutated})),
                                     m.id not in NOT_VIABLE)

    def copy(self, directory, changed):
        """The fixture's files in directory, those in `changed` as given there."""
        for name, text in self.sources.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(changed.get(name, text))
        return directory


class RealSources(unittest.TestCase):
    def listing(self, *args):
        p = subprocess.run([sys.executable, "-B", os.path.join(CI, "mutation.py"), "--list",
                            *args],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        return [line.split("  ", 1)[0] for line in p.stdout.splitlines()]

    def test_list(self):
        ids = self.listing()
        self.assertEqual(len(ids), len(set(ids)), "ids are unique")
        for mutant_id in ids:
            self.assertRegex(mutant_id, ID)
        self.assertEqual({i.split(":")[3] for i in ids}, OPERATORS)
        sample = self.listing("--sample", "7", "--seed", "3")
        self.assertEqual(len(sample), 7)
        self.assertLessEqual(set(sample), set(ids))
        self.assertEqual(sample, self.listing("--sample", "7", "--seed", "3"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
