"""Program text as the project handles it: thread-safe parsing with size limits, docstring
removal and the canonical form.

The canonical form is `ast.unparse` of the tree with docstrings removed: comments, blank
lines, quoting and spacing are normalised, so two programs that differ only in formatting
share one sha256 (`llmnas_dist.vocab.code_hash`, the archive's content address).
"""

from __future__ import annotations

import ast
import threading

from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass

MAX_AST_NODES = 50_000


def reject_at(
    error_class: ErrorClass, message: str, node: ast.AST | None = None
) -> CandidateRejected:
    line = getattr(node, "lineno", None)
    where = f"line {line}: " if line is not None else ""
    return CandidateRejected(error_class, where + message)


# CPython 3.11 keeps the AST constructor's recursion depth in interpreter-wide state, so two
# threads parsing at once can fail with "SystemError: AST constructor recursion depth
# mismatch" (cpython gh-106905; seen in CI when `llmnas seeds check` admitted 1,000 programs
# on a thread pool). Every parse in this package goes through this lock.
_PARSE_LOCK = threading.Lock()


def parse_source(code: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse`, serialised across threads (see _PARSE_LOCK)."""
    with _PARSE_LOCK:
        return ast.parse(code, filename=filename)


def parse_program(code: str, cfg: AdmissionConfig) -> ast.Module:
    """Parse with size limits; hostile input may only ever produce a CandidateRejected."""
    size = len(code.encode("utf-8", errors="replace"))
    if size > cfg.max_source_bytes:
        raise CandidateRejected(
            ErrorClass.TOO_LARGE, f"source is {size} bytes, limit {cfg.max_source_bytes}"
        )
    try:
        tree = parse_source(code, filename="program.py")
    except SyntaxError as exc:
        raise CandidateRejected(
            ErrorClass.SYNTAX_ERROR, f"line {exc.lineno}: {exc.msg}: {(exc.text or '').strip()}"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        raise CandidateRejected(ErrorClass.SYNTAX_ERROR, f"unparseable source: {exc}") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_AST_NODES:
        raise CandidateRejected(ErrorClass.TOO_LARGE, f"{count} AST nodes, limit {MAX_AST_NODES}")
    return tree


def strip_docstrings(tree: ast.Module) -> ast.Module:
    """Remove module, class and function docstrings in place (they are not code)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def canonical_code(tree: ast.Module) -> str:
    """Formatting-independent source of a docstring-free tree (still valid Python)."""
    return ast.unparse(tree) + "\n"
