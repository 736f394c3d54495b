"""The page kit of the report: number formatting, HTML escaping, the stylesheet, the page
frame, verdict badges and tables.

Everything read from the archive (run ids, generated code, error messages, model names) is
hostile text: it goes through `esc` (`html.escape`) before it reaches a page. The page
works offline: inline CSS, and a Content-Security-Policy that lets no script run and
nothing be fetched.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from llmnas_dist.analysis.results import INSUFFICIENT, NOT_SUPPORTED, SUPPORTED

MAX_MESSAGE = 240  # characters of an error message shown
STATUS_CLASS = {SUPPORTED: "ok", NOT_SUPPORTED: "bad", INSUFFICIENT: "na"}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A number for people: ints as ints, floats to `digits` significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return str(value)


def pct(value: Any) -> str:
    return "-" if not isinstance(value, int | float) or math.isnan(value) else f"{value:.1%}"


CSS = """
:root { --ink:#111827; --mute:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --card:#fff;
  --ok:#15803d; --okbg:#dcfce7; --bad:#b91c1c; --badbg:#fee2e2; --na:#4b5563; --nabg:#e5e7eb; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:var(--ink); background:var(--bg); }
header { background:#0f172a; color:#f8fafc; padding:28px 0 22px; }
header h1 { margin:0 0 6px; font-size:26px; }
header .meta { color:#cbd5e1; font-size:14px; }
header .meta b { color:#f8fafc; font-weight:600; }
main, .wrap { max-width:1120px; margin:0 auto; padding:0 24px; }
main { padding-bottom:48px; }
nav { margin-top:14px; font-size:13px; }
nav a { color:#93c5fd; margin-right:14px; text-decoration:none; }
section { background:var(--card); border:1px solid var(--line); border-radius:12px;
  padding:20px 24px; margin:22px 0; box-shadow:0 1px 2px rgba(0,0,0,.04); }
h2 { margin:0 0 4px; font-size:20px; display:flex; align-items:center; gap:12px; }
.claim { color:var(--mute); margin:0 0 10px; font-size:14px; }
.summary-line { margin:8px 0 14px; }
.badge { font-size:12px; font-weight:600; padding:2px 10px; border-radius:999px;
  white-space:nowrap; flex-shrink:0; line-height:18px; }
.badge.ok { color:var(--ok); background:var(--okbg); }
.badge.bad { color:var(--bad); background:var(--badbg); }
.badge.na { color:var(--na); background:var(--nabg); }
.dot { display:inline-block; width:20px; height:20px; line-height:20px; text-align:center;
  border-radius:50%; font-size:11px; font-weight:700; margin-right:3px; }
.dot.ok { color:var(--ok); background:var(--okbg); }
.dot.bad { color:var(--bad); background:var(--badbg); }
.dot.na { color:var(--na); background:var(--nabg); }
.dots { white-space:nowrap; }
body.wide main, body.wide .wrap { max-width:1480px; }
body.wide table { font-size:12px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(330px,1fr)); gap:14px; }
.card { border:1px solid var(--line); border-radius:10px; padding:12px 14px; }
.card h3 { margin:0 0 6px; font-size:15px; display:flex; justify-content:space-between;
  align-items:flex-start; gap:8px; }
.card h3 a { color:inherit; text-decoration:none; }
.card p { margin:0; font-size:13px; color:#374151; }
.grid2 { display:grid; grid-template-columns:minmax(0,1.35fr) minmax(0,1fr); gap:20px;
  align-items:start; }
@media (max-width: 900px) { .grid2 { grid-template-columns:1fr; } }
figure.chart { margin:0; }
svg.plot { max-width:100%; height:auto; font-size:11px; }
svg .grid { stroke:var(--line); }
svg .axis { stroke:#9ca3af; }
svg .tick { fill:var(--mute); }
svg .label { fill:#374151; font-size:12px; }
svg .value { fill:var(--ink); font-size:11px; font-weight:600; }
svg .empty { fill:#f9fafb; stroke:var(--line); stroke-dasharray:4 4; }
.legend { font-size:12px; color:#374151; margin:4px 0 0 62px; }
.legend .key { margin-right:16px; white-space:nowrap; }
.legend i { display:inline-block; width:14px; height:4px; border-radius:2px;
  vertical-align:middle; margin-right:6px; }
.legend i.diamond { width:9px; height:9px; background:var(--ink); transform:rotate(45deg);
  border-radius:1px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { color:var(--mute); font-weight:600; background:#f9fafb; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
table.kv td:first-child { color:var(--mute); width:45%; }
table.fixed { table-layout:fixed; }
table.fixed th.num { width:6.5em; }
code, pre { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12px; }
pre { background:#0f172a; color:#e2e8f0; padding:12px 14px; border-radius:8px;
  overflow:auto; max-height:420px; }
details summary { cursor:pointer; color:#1d4ed8; }
.lineage { font-size:12px; color:#374151; margin:6px 0; }
.warn { background:#fff7ed; border:1px solid #fdba74; color:#9a3412; border-radius:10px;
  padding:12px 16px; margin:22px 0 0; }
.msg { color:#374151; font-size:12px; word-break:break-word; }
footer { color:var(--mute); font-size:12px; text-align:center; padding:18px; }
svg.timeline { font-size:10px; }
svg .strip-bg { fill:#f9fafb; }
svg .strip-label { fill:#374151; font-family:ui-monospace,SFMono-Regular,Menlo,monospace; }
svg .answer { stroke:#111827; stroke-dasharray:4 3; }
.legend i.lost { height:10px; border:1px solid #dc2626; border-radius:1px;
  background:repeating-linear-gradient(45deg,#dc2626 0 2px,#fecaca 2px 5px); }
.legend i.failed { height:10px; background:#fff; border:1.5px dashed #111827; }
figure.timeline { margin:14px 0 6px; }
figure.timeline figcaption { font-size:13px; font-weight:600; margin-bottom:4px; }
.advice { background:#eff6ff; border:1px solid #93c5fd; color:#1e3a8a; border-radius:10px;
  padding:10px 14px; margin:10px 0 14px; overflow-wrap:anywhere; }
ul.advice-list { margin:6px 0 0; padding-left:20px; font-size:13px; overflow-wrap:anywhere; }
ul.advice-list li.last { font-weight:600; }
"""


def page(title: str, header: str, body: str, wide: bool = False) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # no script may run and nothing may be fetched, whatever the archive holds
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f'<body class="{"wide" if wide else ""}">'
        f'<header><div class="wrap">{header}</div></header><main>{body}</main>'
        "<footer>llmnas report: self-contained, works offline</footer></body></html>\n"
    )


def badge(status: str) -> str:
    return f'<span class="badge {STATUS_CLASS.get(status, "na")}">{esc(status)}</span>'


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    numeric: Sequence[bool] = (),
    fixed: bool = False,
) -> str:
    """An HTML table; `fixed`: the text columns share what the numbers leave, so a cell's
    long content (a program's code) scrolls inside it instead of widening the table."""
    num = list(numeric) + [False] * (len(columns) - len(numeric))
    head = "".join(
        f'<th class="num">{esc(c)}</th>' if n else f"<th>{esc(c)}</th>"
        for c, n in zip(columns, num, strict=True)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{v}</td>' if n else f"<td>{v}</td>"
            for v, n in zip(row, num, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    opening = '<table class="fixed">' if fixed else "<table>"
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
