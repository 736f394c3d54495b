"""Statements that never run: they follow, in the same body, a statement that always leaves
it (`return`, `raise`, `continue`, `break`).

The small model's deltas go on past their parent's last line, and that line is `forward`'s
`return`: in a default first run of 2026-12-07 (2-core AMX Xeon) 2 of 14 deltas replaced it
and then added statement after statement below it (`self.pool = nn.AdaptiveAvgPool2d(1)`
again and again, a second `return`) until their 384-token budget ran out; lines that never
run cost the answer its tokens and change nothing. `unreachable_statements` finds them, so
that decoding draws such a line again (`partial.LineJudge`), or ends the delta there.
"""

from __future__ import annotations

import ast

_LEAVES = (ast.Return, ast.Raise, ast.Continue, ast.Break)


def unreachable_statements(tree: ast.Module, first_line: int = 1) -> list[tuple[int, str]]:
    """(line, why) of the first statement on line `first_line` or later of every body (of a
    function, a loop, a branch) that follows a statement leaving that body."""
    found = []
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list):
                continue
            leaves = [n for n, s in enumerate(body) if isinstance(s, _LEAVES)]
            if not leaves or leaves[0] + 1 >= len(body):
                continue
            left, after = body[leaves[0]], body[leaves[0] + 1]
            if after.lineno >= first_line:
                why = (
                    f"`{_first_line(after)}` follows `{_first_line(left)}` in its body and "
                    "never runs"
                )
                found.append((after.lineno, why))
    return found


def _first_line(node: ast.stmt) -> str:
    return ast.unparse(node).split("\n", 1)[0]
