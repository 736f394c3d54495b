"""Right-linear state machines written as Lark grammars (`right_linear`): the answer
grammars of `admission.grammar` are such machines over their parent's lines."""

from __future__ import annotations

import json

# A transition (source state, terminals, target state); target None accepts the answer.
Step = tuple[str, str, "str | None"]


def literal(text: str) -> str:
    """A Lark string literal for exactly `text`."""
    return json.dumps(text, ensure_ascii=False)


def right_linear(
    steps: list[Step],
    terms: dict[str, str],
    tail: list[str],
    blank: str,
    blanks: int = 2,
    after_blank: set[str] | None = None,
) -> str:
    """Lark text of the machine, one rule per state. Right-linear, so an Earley row holds
    only the current state's alternatives (written left-recursively, every rule is predicted
    at the answer's first byte: ~18 items per parent line, over llguidance's default of
    2,000 per row at ~110 lines; right-linear, a hunk's start holds ~3 per line). Blank
    lines (`gap`, at most `blanks`) may precede any line; they are a rule of their own because
    inside each line's terminal they made llguidance's lexer run out of expressions at
    ~250 parent lines. Only states that are reachable and can still finish are written.
    `tail`: the rules and terminals the steps name besides the literal lines; `blank`: the
    regex of a blank line; `after_blank`: the terminals a blank line may precede (None:
    any line)."""
    useful = _forward(steps, "start") & _backward(steps)
    lines_of: dict[str, list[str]] = {}  # alternatives that start with a line
    moves: dict[str, list[str]] = {}  # epsilon alternatives (to another state)
    for src, syms, dst in steps:
        if src in useful and (dst is None or dst in useful):
            target = lines_of if syms else moves
            target.setdefault(src, []).append(f"{syms} {dst or ''}".strip())
    rules = []
    for name in dict.fromkeys([*lines_of, *moves]):
        alts = list(moves.get(name, []))
        if name in lines_of and name == "start":
            alts = lines_of[name] + alts
        elif name in lines_of:
            rules.append(f"{name}_line: " + " | ".join(lines_of[name]))
            spaced = [
                a for a in lines_of[name] if after_blank is None or a.split()[0] in after_blank
            ]
            if spaced == lines_of[name]:
                alts = [f"gap {name}_line", f"{name}_line", *alts]
            elif spaced:
                rules.append(f"{name}_spaced: " + " | ".join(spaced))
                alts = [f"gap {name}_spaced", f"{name}_line", *alts]
            else:
                alts = [f"{name}_line", *alts]
        rules.append(f"{name}: " + " | ".join(alts))
    rules.append("gap: " + " | ".join(" ".join(["BLANK"] * k) for k in range(1, blanks + 1)))
    rules += [f"{name}: {literal(text)}" for text, name in terms.items()]
    rules += [*tail, f"BLANK: {blank}"]
    return "\n".join(rules) + "\n"


def _reachable(edges: dict[str, list[str]], starts: set[str]) -> set[str]:
    """Every state reachable from `starts` along `edges` (starts included)."""
    seen, todo = set(starts), list(starts)
    while todo:
        for nxt in edges.get(todo.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _forward(steps: list[Step], root: str) -> set[str]:
    """States reachable from `root`."""
    targets: dict[str, list[str]] = {}
    for src, _, dst in steps:
        if dst is not None:
            targets.setdefault(src, []).append(dst)
    return _reachable(targets, {root})


def _backward(steps: list[Step]) -> set[str]:
    """States from which an accepting transition can be reached."""
    sources: dict[str, list[str]] = {}
    for src, _, dst in steps:
        if dst is not None:
            sources.setdefault(dst, []).append(src)
    return _reachable(sources, {src for src, _, dst in steps if dst is None})
