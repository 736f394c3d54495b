"""Statements that never run (`admission.reach`), judged on programs written here."""

from __future__ import annotations

from llmnas_dist.admission.reach import unreachable_statements
from llmnas_dist.program.source import parse_source

PROGRAM = """\
class Net:
    def forward(self, x):
        x = self.a(x)
        return self.fc(x)
        self.pool = 3
        return x

    def loop(self, xs):
        for x in xs:
            if x:
                continue
                x = 2
            else:
                raise ValueError(x)
                print(x)
        while True:
            break
        return 1
"""


def test_the_first_statement_after_one_that_leaves_its_body_is_found():
    found = unreachable_statements(parse_source(PROGRAM))
    assert [line for line, _ in found] == [5, 12, 15]
    assert "`self.pool = 3` follows `return self.fc(x)`" in found[0][1]
    assert "follows `continue`" in found[1][1] and "follows `raise ValueError(x)`" in found[2][1]


def test_statements_before_the_first_line_judged_are_not_reported():
    assert [line for line, _ in unreachable_statements(parse_source(PROGRAM), 6)] == [12, 15]


def test_a_body_that_ends_in_its_return_has_none():
    code = "def f(x):\n    if x:\n        return 1\n    y = 2\n    return y\n"
    assert unreachable_statements(parse_source(code)) == []
