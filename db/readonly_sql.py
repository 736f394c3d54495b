"""Vetting of user SQL for `llmnas archive sql`: one SELECT or WITH statement, nothing else.

This check is the first of two fences: the query then runs on a read-only connection
(SQLite `mode=ro`, PostgreSQL `SET TRANSACTION READ ONLY`), which also stops a write
hidden inside a WITH (`WITH x AS (DELETE ... RETURNING *) SELECT ...`).
"""

from __future__ import annotations

import re

from llmnas_dist.errors import UsageError

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
ALLOWED_FIRST = ("select", "with")


def _skip_quoted(sql: str, i: int, quote: str) -> int:
    """Index just past the quoted literal/identifier starting at i (doubled quote escapes)."""
    j = i + 1
    while True:
        k = sql.find(quote, j)
        if k < 0:
            raise UsageError(f"unterminated {quote} quote in the query")
        if sql.startswith(quote * 2, k):
            j = k + 2
            continue
        return k + 1


def code_tokens(sql: str) -> list[tuple[str, int]]:
    """(token, offset) outside comments and literals: lowercased words, `;`, other chars."""
    tokens: list[tuple[str, int]] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i):
            nl = sql.find("\n", i)
            i = n if nl < 0 else nl + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                raise UsageError("unterminated /* comment in the query")
            i = end + 2
        elif ch in "'\"`":
            tokens.append(("<literal>", i))
            i = _skip_quoted(sql, i, ch)
        elif ch == "$" and (m := _DOLLAR_TAG.match(sql, i)):
            end = sql.find(m.group(0), m.end())
            if end < 0:
                raise UsageError("unterminated dollar-quoted string in the query")
            tokens.append(("<literal>", i))
            i = end + len(m.group(0))
        elif m := _WORD.match(sql, i):
            tokens.append((m.group(0).lower(), i))
            i = m.end()
        else:
            tokens.append((ch, i))
            i += 1
    return tokens


def vet_select(sql: str) -> str:
    """Return the query without a trailing `;`; UsageError unless it is one SELECT/WITH."""
    tokens = code_tokens(sql)
    first = next((t for t, _ in tokens if t != "("), None)
    if first is None:
        raise UsageError("empty query")
    if first not in ALLOWED_FIRST:
        raise UsageError(f"only SELECT or WITH queries are allowed (got {first.upper()!r})")
    semicolons = [pos for t, pos in tokens if t == ";"]
    if not semicolons:
        return sql
    if len(semicolons) > 1 or tokens[-1][0] != ";":
        raise UsageError("only one statement is allowed (remove the ';' between statements)")
    return sql[: semicolons[0]]
