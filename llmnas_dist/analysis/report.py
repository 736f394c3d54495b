"""The run report: one self-contained HTML page per run, or runs side by side.

The page works offline: inline CSS, inline SVG plots drawn here, no script, no external
fetch. Everything read from the archive (run ids, generated code, error messages, model
names) is hostile text and goes through `html.escape` before it reaches the page. A JSON
file with the same numbers is written next to the page for scripts.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmnas_dist.admission.grammar import decoding_of
from llmnas_dist.analysis.diagnostics import (
    INSUFFICIENT,
    NOT_SUPPORTED,
    SUPPORTED,
    Result,
    RunData,
    arch_scores,
    diagnose,
    json_safe,
    load_run_data,
)
from llmnas_dist.analysis.timeline import (
    ActorUse,
    CycleUse,
    Span,
    SpanKind,
    SpanOutcome,
    run_uses,
    to_json,
)

TOP_K = 10
MAX_MESSAGE = 240
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04")
STATUS_CLASS = {SUPPORTED: "ok", NOT_SUPPORTED: "bad", INSUFFICIENT: "na"}
RESULT_KEYS = (
    "ce_equivalence",
    "monotonicity",
    "elite_mass",
    "delta_vs_full",
    "no_collapse",
    "proxy_reliability",
)


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


# ---- SVG plots -------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    kind: str = "line"  # line | dashed | points
    lo: Sequence[float | None] | None = None  # error bars
    hi: Sequence[float | None] | None = None
    color: str = ""


@dataclass
class Frame:
    """Maps data coordinates into a width x height SVG with margins for the axes."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = 640
    height: int = 280
    margin: tuple[int, int, int, int] = (16, 16, 46, 62)  # top, right, bottom, left

    def x(self, v: float) -> float:
        top, right, bottom, left = self.margin
        span = (self.x1 - self.x0) or 1.0
        return left + (v - self.x0) / span * (self.width - left - right)

    def y(self, v: float) -> float:
        top, right, bottom, left = self.margin
        span = (self.y1 - self.y0) or 1.0
        return self.height - bottom - (v - self.y0) / span * (self.height - top - bottom)


def _nice_step(span: float, n: int) -> float:
    raw = span / max(n, 1) or 1.0
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if raw <= m * mag)


def ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    if hi <= lo:
        return [lo]
    step = _nice_step(hi - lo, n)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def _extent(values: Sequence[float], pad: float = 0.08) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        return lo - (abs(lo) * 0.1 or 0.5), hi + (abs(hi) * 0.1 or 0.5)
    margin = (hi - lo) * pad
    return lo - margin, hi + margin


def _svg_open(frame: Frame, label: str) -> str:
    return (
        f'<svg class="plot" viewBox="0 0 {frame.width} {frame.height}" width="{frame.width}" '
        f'height="{frame.height}" role="img" aria-label="{esc(label)}" '
        'xmlns="http://www.w3.org/2000/svg">'
    )


def _axes(
    frame: Frame, x_label: str, y_label: str, x_integer: bool, x_ticks: bool = True
) -> list[str]:
    top, right, bottom, left = frame.margin
    out = []
    for v in ticks(frame.y0, frame.y1):
        y = frame.y(v)
        out.append(
            f'<line class="grid" x1="{left}" x2="{frame.width - right}" y1="{y:.1f}" '
            f'y2="{y:.1f}"/><text class="tick" x="{left - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{esc(fmt(v, 3))}</text>'
        )
    base = frame.height - bottom
    for v in ticks(frame.x0, frame.x1, 8, integer=x_integer) if x_ticks else []:
        x = frame.x(v)
        out.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}"/>'
            f'<text class="tick" x="{x:.1f}" y="{base + 17}" text-anchor="middle">'
            f"{esc(fmt(v, 3))}</text>"
        )
    out.append(
        f'<line class="axis" x1="{left}" x2="{frame.width - right}" y1="{base}" y2="{base}"/>'
        f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{base}"/>'
        f'<text class="label" x="{(left + frame.width - right) / 2:.1f}" '
        f'y="{frame.height - 8}" text-anchor="middle">{esc(x_label)}</text>'
        f'<text class="label" transform="translate(14 {(top + base) / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{esc(y_label)}</text>'
    )
    return out


def _segments(frame: Frame, xs: Sequence[float], ys: Sequence[float | None]) -> list[str]:
    """Polyline point lists, broken where a value is missing."""
    runs: list[list[str]] = [[]]
    for x, y in zip(xs, ys, strict=True):
        if y is None or not math.isfinite(y):
            runs.append([])
        else:
            runs[-1].append(f"{frame.x(x):.1f},{frame.y(y):.1f}")
    return [" ".join(r) for r in runs if r]


def _draw_series(frame: Frame, s: Series) -> list[str]:
    out = []
    if s.kind in ("line", "dashed"):
        dash = ' stroke-dasharray="6 4"' if s.kind == "dashed" else ""
        out += [
            f'<polyline fill="none" stroke="{s.color}" stroke-width="2"{dash} points="{pts}"/>'
            for pts in _segments(frame, s.xs, s.ys)
        ]
    if s.lo is not None and s.hi is not None:
        for x, lo, hi in zip(s.xs, s.lo, s.hi, strict=True):
            if lo is not None and hi is not None:
                px = frame.x(x)
                out.append(
                    f'<line stroke="{s.color}" stroke-width="1.5" x1="{px:.1f}" x2="{px:.1f}" '
                    f'y1="{frame.y(lo):.1f}" y2="{frame.y(hi):.1f}"/>'
                )
    if s.kind != "dashed":
        for x, y in zip(s.xs, s.ys, strict=True):
            if y is not None and math.isfinite(y):
                out.append(
                    f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3.5" '
                    f'fill="{s.color}"><title>{esc(s.label)}: {esc(fmt(y))}</title></circle>'
                )
    return out


def _legend(series: Sequence[Series]) -> str:
    items = "".join(
        f'<span class="key"><i style="background:{s.color}"></i>{esc(s.label)}</span>'
        for s in series
    )
    return f'<div class="legend">{items}</div>'


def no_data(label: str, why: str = "no data to plot yet") -> str:
    frame = Frame(0, 1, 0, 1, height=120)
    return (
        f'<figure class="chart">{_svg_open(frame, label)}<rect class="empty" x="1" y="1" '
        f'width="{frame.width - 2}" height="{frame.height - 2}" rx="8"/><text class="label" '
        f'x="{frame.width / 2}" y="{frame.height / 2 + 4}" text-anchor="middle">{esc(why)}'
        f"</text></svg></figure>"
    )


def line_chart(
    series: Sequence[Series],
    *,
    label: str,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    x_integer: bool = True,
) -> str:
    """Lines, points and error bars over a shared x axis (cycles by default)."""
    series = [s for s in series if any(y is not None and math.isfinite(y) for y in s.ys)]
    if not series:
        return no_data(label)
    for i, s in enumerate(series):
        s.color = s.color or PALETTE[i % len(PALETTE)]
    xs = [float(x) for s in series for x in s.xs]
    ys = [float(y) for s in series for y in (*s.ys, *(s.lo or []), *(s.hi or [])) if y is not None]
    ys = [y for y in ys if math.isfinite(y)]
    x0, x1 = (min(xs) - 0.5, max(xs) + 0.5) if x_integer else _extent(xs)
    y0, y1 = y_range or _extent(ys)
    frame = Frame(x0, x1, y0, y1)
    parts = [_svg_open(frame, label), *_axes(frame, x_label, y_label, x_integer)]
    for s in series:
        parts += _draw_series(frame, s)
    parts.append("</svg>")
    return f'<figure class="chart">{"".join(parts)}{_legend(series)}</figure>'


@dataclass
class Bar:
    label: str
    value: float
    lo: float | None = None
    hi: float | None = None
    marker: float | None = None  # e.g. a model's prediction, drawn as a diamond


def bar_chart(
    bars: Sequence[Bar], *, label: str, y_label: str, marker_label: str = "", y_max: float = 1.0
) -> str:
    bars = [b for b in bars if math.isfinite(b.value)]
    if not bars:
        return no_data(label)
    frame = Frame(0, len(bars), 0, y_max, width=480)
    # categorical x axis: the bars carry their own labels
    parts = [_svg_open(frame, label), *_axes(frame, "", y_label, True, x_ticks=False)]
    for i, b in enumerate(bars):
        parts += _draw_bar(frame, i, b, PALETTE[i % len(PALETTE)])
    parts.append("</svg>")
    legend = (
        f'<div class="legend"><span class="key"><i class="diamond"></i>{esc(marker_label)}'
        "</span></div>"
        if marker_label and any(b.marker is not None for b in bars)
        else ""
    )
    return f'<figure class="chart">{"".join(parts)}{legend}</figure>'


def _draw_bar(frame: Frame, i: int, b: Bar, color: str) -> list[str]:
    left, right = frame.x(i + 0.2), frame.x(i + 0.8)
    mid = (left + right) / 2
    top, base = frame.y(b.value), frame.y(0)
    out = [
        f'<rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" '
        f'height="{base - top:.1f}" fill="{color}" opacity="0.85" rx="3">'
        f"<title>{esc(b.label)}: {esc(fmt(b.value))}</title></rect>",
        f'<text class="tick" x="{mid:.1f}" y="{base + 17:.1f}" text-anchor="middle">'
        f"{esc(b.label)}</text>",
        f'<text class="value" x="{mid:.1f}" y="{top - 6:.1f}" text-anchor="middle">'
        f"{esc(pct(b.value) if frame.y1 <= 1.0 else fmt(b.value, 3))}</text>",
    ]
    if b.lo is not None and b.hi is not None:
        lo, hi = frame.y(b.lo), frame.y(b.hi)
        out.append(
            f'<path d="M{mid - 8:.1f},{hi:.1f}H{mid + 8:.1f}M{mid:.1f},{hi:.1f}V{lo:.1f}'
            f'M{mid - 8:.1f},{lo:.1f}H{mid + 8:.1f}" stroke="#111827" stroke-width="1.5"/>'
        )
    if b.marker is not None and math.isfinite(b.marker):
        y = frame.y(min(b.marker, frame.y1))
        out.append(
            f'<path d="M{right + 10:.1f},{y - 6:.1f}l6,6l-6,6l-6,-6z" fill="#111827">'
            f"<title>{esc(fmt(b.marker))}</title></path>"
        )
    return out


def hbar_chart(items: Sequence[tuple[str, int]], *, label: str) -> str:
    """Horizontal bars of counts (the failure breakdown)."""
    if not items:
        return no_data(label, "no rejected or failed candidates")
    width, row, left = 640, 24, 170
    height = row * len(items) + 12
    top = max(n for _, n in items) or 1
    parts = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (name, n) in enumerate(items):
        y = 6 + i * row
        w = (width - left - 60) * n / top
        parts.append(
            f'<text class="tick" x="{left - 8}" y="{y + 15}" text-anchor="end">{esc(name)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" rx="3" '
            f'fill="{PALETTE[1]}" opacity="0.8"/><text class="value" x="{left + w + 6:.1f}" '
            f'y="{y + 15}">{n}</text>'
        )
    parts.append("</svg>")
    return f'<figure class="chart">{"".join(parts)}</figure>'


# ---- the run report --------------------------------------------------------------------


@dataclass
class RunReport:
    data: RunData
    results: dict[str, Result]
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    generated_at: str = ""
    utilisation: list[CycleUse] = field(default_factory=list)  # one per cycle with spans

    @property
    def best(self) -> float | None:
        return self.leaderboard[0]["score"] if self.leaderboard else None

    @property
    def gate_low(self) -> bool:
        rel = self.results["proxy_reliability"].numbers
        events = rel.get("gate_events") or []
        return bool((rel.get("gate") or {}).get("low")) or any(e.get("low") for e in events)


def build_run_report(archive: Any, run_id: str, top_k: int = TOP_K) -> RunReport:
    data = load_run_data(archive, run_id)
    return RunReport(
        data=data,
        results=diagnose(data),
        leaderboard=leaderboard(archive, run_id, top_k),
        failures=failure_breakdown(archive, data),
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        utilisation=run_utilisation(archive, run_id),
    )


def run_utilisation(archive: Any, run_id: str) -> list[CycleUse]:
    """Per-cycle utilisation from the archive's spans and each cycle's evaluator count
    (runs recorded before spans existed give an empty list)."""
    evaluators = {c.t: c.n_evaluators or 0 for c in archive.cycles(run_id)}
    return run_uses(archive.spans(run_id), evaluators)


def leaderboard(archive: Any, run_id: str, k: int) -> list[dict[str, Any]]:
    rows = []
    for top in archive.top(run_id, k):
        arch = archive.get_architecture(top.hash)
        rows.append(
            {
                **top._asdict(),
                "code": arch.code,
                "lineage": [step._asdict() for step in archive.lineage(top.hash)],
            }
        )
    return rows


def failure_breakdown(archive: Any, data: RunData) -> list[dict[str, Any]]:
    """The archive's failure counts, with the stage, modes and one example message."""
    rows = []
    for error_class, constrained, count in archive.failures(data.run_id):
        cands = [
            c
            for c in data.candidates
            if c.error_class == error_class and c.constrained == constrained
        ]
        stages = sorted({"evaluation" if c.status == "failed" else "admission" for c in cands})
        example = next((c.message for c in cands if c.message), None)
        rows.append(
            {
                "error_class": error_class,
                "decoding": decoding_of(constrained),
                "count": count,
                "stage": "/".join(stages) or "-",
                "delta": sum(1 for c in cands if c.mode == "delta"),
                "full": sum(1 for c in cands if c.mode == "full"),
                "example": None if example is None else example[:MAX_MESSAGE],
            }
        )
    return rows


def report_json(rep: RunReport) -> dict[str, Any]:
    d = rep.data
    return json_safe(
        {
            "run": {
                "id": d.run_id,
                "status": d.status,
                "dataset": d.dataset,
                "budget": d.budget,
                "model": d.model,
                "cycles": len(d.cycles),
                "candidates": len(d.candidates),
                "evaluated": len(arch_scores(d.evaluations, d.dataset, d.budget)),
            },
            "generated_at": rep.generated_at,
            "results": {k: r.to_dict() for k, r in rep.results.items()},
            "leaderboard": rep.leaderboard,
            "failures": rep.failures,
            "gate_warning": rep.gate_low,
            "utilisation": [{**to_json(u), "advice": u.advice(d.run_id)} for u in rep.utilisation],
        }
    )


# ---- HTML pieces -----------------------------------------------------------------------

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


def _flatten(numbers: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in numbers.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "direction" in value and "p_value" in value:
            out.append((name, _trend_text(value)))
        elif isinstance(value, dict):
            out += _flatten(value, f"{name}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out.append((name, f"{len(value)} entries"))
        elif isinstance(value, list):
            out.append((name, ", ".join(fmt(v) for v in value) or "none"))
        else:
            out.append((name, value))
    return out


def _trend_text(trend: dict[str, Any]) -> str:
    return (
        f"{trend['direction']} (n {trend['n']}, tau {fmt(trend['tau'], 3)}, "
        f"p {fmt(trend['p_value'], 3)}, slope {fmt(trend['slope'], 3)})"
    )


# numbers already shown in the result's own table, left out of its key-value list
SHOWN_ELSEWHERE = {
    "delta_vs_full": {"delta", "full"},
    "proxy_reliability": {"gate_events", "n_arch", "n_scores"},
}


def kv_table(result: Result) -> str:
    skip = SHOWN_ELSEWHERE.get(result.key, set())
    numbers = {k: v for k, v in result.numbers.items() if k not in skip}
    if isinstance(numbers.get("gate"), dict):  # its SNR and sizes are listed already
        numbers["gate"] = {k: numbers["gate"].get(k) for k in ("threshold", "low")}
    rows = [(k, fmt(v)) for k, v in _flatten(result.samples, "n.")]
    rows += [(k, fmt(v)) for k, v in _flatten(numbers)]
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def result_section(result: Result, plot: str, extra: str = "") -> str:
    return (
        f'<section id="{esc(result.key)}" class="result" data-status="{esc(result.status)}">'
        f"<h2>{esc(result.title)} {badge(result.status)}</h2>"
        f'<p class="claim">{esc(result.claim)}</p>'
        f'<p class="summary-line">{esc(result.summary)}</p>'
        f'<div class="grid2"><div>{plot}{extra}</div><div>{kv_table(result)}</div></div>'
        "</section>"
    )


# ---- one plot per result ---------------------------------------------------------------


def plot_ce(r: Result) -> str:
    s = r.series
    return line_chart(
        [Series("LoRA training loss on E_t", s["t"], s["train_loss"])],
        label="fine-tuning loss per cycle",
        x_label="cycle t",
        y_label="training loss",
    ) + table(
        ["cycle", "examples", "|E_t|", "loss"],
        [[fmt(t), fmt(n), fmt(e), fmt(loss)] for t, n, e, loss in zip(
            s["t"], s["n_examples"], s["n_elites"], s["train_loss"], strict=True)],
        [True] * 4,
    )  # fmt: skip


def plot_monotonicity(r: Result) -> str:
    s = r.series
    return line_chart(
        [
            Series("elite mean E[score | E_t]", s["t"], s["elite_mean"]),
            Series("gamma_t", s["t"], s["gamma_t"], kind="dashed"),
            Series("mean of cycle's samples", s["sample_t"], s["sample_mean"], kind="points"),
        ],
        label="elite mean and threshold per cycle",
        x_label="cycle t",
        y_label="proxy score",
    )


def plot_elite_mass(r: Result) -> str:
    s = r.series
    if not s:
        return no_data("elite mass")
    return line_chart(
        [
            Series("C_t (95% Wilson)", s["t"], s["c_t"], kind="points", lo=s["lo"], hi=s["hi"]),
            Series("bound 1-(1-rho_0)^t", s["t"], s["bound"], kind="dashed"),
        ],
        label="elite mass against its bound",
        x_label="cycle t",
        y_label="share at or above gamma*",
        y_range=(0.0, 1.0),
    )


def plot_delta_full(r: Result) -> str:
    modes = r.series["modes"]
    predicted = r.numbers.get("predicted_delta_rate")
    bars = [
        Bar(
            m, modes[m]["rate"], modes[m]["lo"], modes[m]["hi"], predicted if m == "delta" else None
        )
        for m in ("delta", "full")
    ]
    rows = [
        [esc(m), fmt(modes[m]["n"]), fmt(modes[m]["valid"]), pct(modes[m]["rate"]),
         f"{pct(modes[m]['lo'])} - {pct(modes[m]['hi'])}" if modes[m]["n"] else "-",
         fmt(modes[m]["mean_tokens"], 4), f"{modes[m]['slots_valid']}/{modes[m]['slots']}"]
        for m in ("delta", "full")
    ]  # fmt: skip
    return bar_chart(
        bars,
        label="valid rate per generation mode",
        y_label="valid-generation rate",
        marker_label="Markov-model prediction for delta",
    ) + table(
        ["mode", "attempts", "valid", "rate", "95% interval", "mean tokens", "valid slots"],
        rows,
        [False, True, True, True, True, True, True],
    )


def plot_collapse(r: Result) -> str:
    s = r.series
    return line_chart(
        [
            Series("novelty rejection rate", s["t"], s["rejection_rate"]),
            Series("mean pairwise Jaccard", s["t"], s["mean_jaccard"]),
            Series("distinct structures / programs", s["t"], s["structure_share"]),
        ],
        label="diversity per cycle",
        x_label="cycle t",
        y_label="share",
        y_range=(0.0, 1.0),
    )


def plot_reliability(r: Result) -> str:
    noise: dict[str, list[float]] = r.series.get("noise") or {}
    order = sorted(noise, key=lambda a: sum(noise[a]) / len(noise[a]))
    seeds = Series(
        "seed scores", [i + 1 for i, a in enumerate(order) for _ in noise[a]],
        [v for a in order for v in noise[a]], kind="points",
    )  # fmt: skip
    means = Series(
        "architecture mean",
        [i + 1 for i in range(len(order))],
        [sum(noise[a]) / len(noise[a]) for a in order],
        kind="dashed",
    )
    out = line_chart(
        [seeds, means],
        label="repeated seeds per architecture",
        x_label="architecture (by mean proxy score)",
        y_label="proxy score",
    )
    events = r.numbers.get("gate_events") or []
    if events:
        out += table(
            ["gate at cycle", "SNR", "threshold", "architectures", "below"],
            [[fmt(e.get("t")), fmt(e.get("snr"), 3), fmt(e.get("threshold")),
              fmt(e.get("n_archs")), fmt(bool(e.get("low")))] for e in events],
            [True, True, True, True, False],
        )  # fmt: skip
    pairs = r.series.get("pairs") or []
    if pairs:
        out += line_chart(
            [Series("architecture", [p[0] for p in pairs], [p[1] for p in pairs], kind="points")],
            label="proxy against reference",
            x_label="proxy score (run budget)",
            y_label="reference score",
            x_integer=False,
        )
    return out


PLOTS: dict[str, Callable[[Result], str]] = {
    "ce_equivalence": plot_ce,
    "monotonicity": plot_monotonicity,
    "elite_mass": plot_elite_mass,
    "delta_vs_full": plot_delta_full,
    "no_collapse": plot_collapse,
    "proxy_reliability": plot_reliability,
}


# ---- the run page ----------------------------------------------------------------------


def _short(h: str | None) -> str:
    return h[:12] if h else "-"


def lineage_text(steps: Sequence[dict[str, Any]]) -> str:
    parts = []
    for s in steps:
        where = "seed" if s.get("cycle") in (None, 0) and not s.get("parent_hash") else (
            f"cycle {fmt(s.get('cycle'))}, {s.get('mode') or '?'}")  # fmt: skip
        parts.append(f"<code>{esc(_short(s['hash']))}</code> ({esc(where)})")
    return " &larr; ".join(parts)


def leaderboard_section(rep: RunReport) -> str:
    rows = []
    for r in rep.leaderboard:
        opened = " open" if r["rank"] == 1 else ""  # the best program is shown at once
        detail = (
            f"<details{opened}><summary>code and lineage</summary>"
            f'<div class="lineage">lineage: {lineage_text(r["lineage"])}</div>'
            f"<pre><code>{esc(r['code'])}</code></pre></details>"
        )
        rows.append(
            [fmt(r["rank"]), f"<code>{esc(_short(r['hash']))}</code>{detail}", fmt(r["score"]),
             fmt(r["n_seeds"]), fmt(r["params"]), fmt(r["first_cycle"])]
        )  # fmt: skip
    body = (
        table(
            ["rank", "architecture", "score", "seeds", "params", "first cycle"],
            rows,
            [True, False, True, True, True, True],
            fixed=True,
        )
        if rows
        else "<p>no architecture was evaluated at the run's budget yet</p>"
    )
    return (
        f'<section id="leaderboard"><h2>Leaderboard</h2><p class="claim">The run\'s '
        f"{len(rows)} best architectures at {esc(rep.data.budget)} on {esc(rep.data.dataset)} "
        f"(mean over seeds), with their code and the chain of parents.</p>{body}</section>"
    )


def failures_section(rep: RunReport) -> str:
    total = len(rep.data.candidates) or 1
    rows = [
        [f"<code>{esc(f['error_class'])}</code>", esc(f["decoding"]), fmt(f["count"]),
         pct(f["count"] / total), esc(f["stage"]), fmt(f["delta"]), fmt(f["full"]),
         f'<span class="msg">{esc(f["example"] or "")}</span>']
        for f in rep.failures
    ]  # fmt: skip
    chart = hbar_chart(
        [(f"{f['error_class']} ({f['decoding']})", int(f["count"])) for f in rep.failures],
        label="failures by class",
    )
    body = table(
        ["error class", "decoding", "count", "of candidates", "stage", "delta", "full",
         "example"],
        rows,
        [False, False, True, True, False, True, True, False],
    )  # fmt: skip
    return (
        f'<section id="failures"><h2>Failures by error class</h2><p class="claim">Rejected and '
        f"failed candidates of {len(rep.data.candidates)} in all.</p>{chart}{body}</section>"
    )


def summary_section(rep: RunReport) -> str:
    cards = "".join(
        f'<div class="card"><h3><a href="#{esc(r.key)}">{esc(r.title)}</a>{badge(r.status)}</h3>'
        f"<p>{esc(r.summary)}</p></div>"
        for r in rep.results.values()
    )
    return f'<section id="summary"><h2>Summary</h2><div class="cards">{cards}</div></section>'


def gate_warning(rep: RunReport) -> str:
    if not rep.gate_low:
        return ""
    rel = rep.results["proxy_reliability"].numbers
    events = [e for e in rel.get("gate_events") or [] if e.get("low")]
    where = ", ".join(f"cycle {fmt(e.get('t'))} (SNR {fmt(e.get('snr'), 3)})" for e in events)
    gate = rel.get("gate") or {}
    now = (
        f"SNR now {fmt(gate.get('snr'), 3)}, threshold {fmt(gate.get('threshold'))}. "
        if gate
        else ""
    )
    return (
        '<div class="warn" id="gate-warning"><b>Proxy reliability warning:</b> the proxy\'s '
        f"signal-to-noise ratio fell below the configured threshold. {esc(now)}"
        + (f"The gate fired at {esc(where)}." if where else "")
        + "</div>"
    )


def run_header(rep: RunReport) -> str:
    d = rep.data
    meta = [
        ("status", d.status), ("dataset", d.dataset), ("budget", d.budget), ("model", d.model),
        ("cycles", len(d.cycles)), ("candidates", len(d.candidates)), ("best", fmt(rep.best)),
    ]  # fmt: skip
    links = "".join(
        f'<a href="#{k}">{esc(n)}</a>'
        for k, n in [("summary", "summary"), *[(k, k.replace("_", " ")) for k in RESULT_KEYS],
                     ("leaderboard", "leaderboard"), ("failures", "failures"),
                     ("utilisation", "utilisation")]
    )  # fmt: skip
    return (
        f'<h1>Run {esc(d.run_id)}</h1><div class="meta">'
        + " &middot; ".join(f"{esc(k)} <b>{esc(v)}</b>" for k, v in meta)
        + f" &middot; generated {esc(rep.generated_at)}</div><nav>{links}</nav>"
    )


def render_run_html(rep: RunReport) -> str:
    sections = [gate_warning(rep), summary_section(rep)]
    sections += [result_section(r, PLOTS[r.key](r)) for r in rep.results.values()]
    sections += [leaderboard_section(rep), failures_section(rep), utilisation_section(rep)]
    return page(f"llmnas report: {rep.data.run_id}", run_header(rep), "".join(sections))


# ---- utilisation: where each cycle's time went ------------------------------------------

# timelines drawn for the last few cycles only: hundreds of spans each keep the page heavy
TIMELINE_CYCLES = 3
KIND_COLOR = {
    SpanKind.GENERATE.value: PALETTE[0],
    SpanKind.ADMIT.value: "#6b7280",
    SpanKind.EVALUATE.value: PALETTE[2],
    SpanKind.STUDY.value: PALETTE[5],
    SpanKind.FINETUNE.value: PALETTE[4],
    SpanKind.WARM_START.value: PALETTE[6],
}
LOST_COLOR = "#dc2626"
LAST_CLASS = ' class="last"'
GROUP_COLUMNS = (("generator", "generator"), ("evaluator", "evaluator"),
                 ("finetuner", "fine-tuner"), ("driver", "driver"))  # fmt: skip


@dataclass(frozen=True)
class StripLayout:
    """Geometry of a timeline: one strip per actor, so the height follows the actor count
    (40 evaluators stay as readable as 3)."""

    strips: int
    seconds: float
    width: int = 1000  # the section's content box at the page's widest
    label_w: int = 250  # "evaluator 1a2b3c4d @5f3a9c gpu 0,1" in 10 px monospace
    right: int = 16
    top: int = 22  # room for the "last answer" label
    bottom: int = 40  # ticks and the axis label
    row: int = 18
    bar: int = 12

    @property
    def height(self) -> int:
        return self.top + self.row * max(self.strips, 1) + self.bottom

    @property
    def base(self) -> int:
        return self.top + self.row * max(self.strips, 1)

    def x(self, seconds: float) -> float:
        span = self.seconds or 1.0
        return self.label_w + seconds / span * (self.width - self.label_w - self.right)

    def y(self, i: int) -> float:
        return self.top + i * self.row + (self.row - self.bar) / 2


def strip_label(u: ActorUse) -> str:
    """group, short actor id, node prefix and GPU(s): enough to tell strips apart; the
    full ids are in the strip's tooltip."""
    parts = [u.group]
    if u.actor != u.group:  # the driver's actor id is "driver"
        parts.append(u.actor[:8])
    if u.node_id:
        parts.append(f"@{u.node_id[:6]}")
    if u.gpu_id:
        parts.append(f"gpu {u.gpu_id[:10]}")
    return " ".join(parts)


def _span_rect(lay: StripLayout, i: int, s: Span, t0: float, hatch: str) -> str:
    left = lay.x(s.started - t0)
    # a sub-pixel span stays visible: hundreds of short admissions are the point
    width = max(lay.x(s.ended - t0) - left, 0.8)
    style = f'fill="{KIND_COLOR.get(s.kind, PALETTE[3])}"'
    if width > 3:  # a hairline tells back-to-back spans of one kind apart
        style += ' stroke="#fff" stroke-width="0.6"'
    cls = "span"
    if s.outcome == SpanOutcome.LOST.value:
        cls, style = "span lost", f'fill="url(#{hatch})" stroke="{LOST_COLOR}" stroke-width="1.5"'
    elif s.outcome == SpanOutcome.FAILED.value:
        cls, style = "span failed", style + ' stroke="#111827" stroke-dasharray="2 1.5"'
    tip = f"{s.kind} {s.outcome}, {s.seconds:.2f} s from {s.started - t0:.2f} s"
    if s.key:
        tip += f", {s.key} attempt {s.attempt}"
    if s.message:
        tip += f": {s.message[:MAX_MESSAGE]}"
    return (
        f'<rect class="{cls}" data-kind="{esc(s.kind)}" x="{left:.2f}" y="{lay.y(i):.1f}" '
        f'width="{width:.2f}" height="{lay.bar}" {style}><title>{esc(tip)}</title></rect>'
    )


def _strip(lay: StripLayout, i: int, u: ActorUse, t0: float, hatch: str) -> str:
    top = lay.top + i * lay.row
    full = f"{u.group} {u.actor} node {u.node_id or '-'} gpu {u.gpu_id or '-'}: busy {u.share:.0%}"
    bg = (
        f'<rect class="strip-bg" x="{lay.label_w}" y="{top}" '
        f'width="{lay.width - lay.label_w - lay.right}" height="{lay.row}"/>'
        if i % 2 == 0
        else ""
    )
    rects = "".join(_span_rect(lay, i, s, t0, hatch) for s in u.spans)
    return (
        f'<g class="strip" data-actor="{esc(u.actor)}" data-group="{esc(u.group)}">{bg}'
        f'<text class="strip-label" x="{lay.label_w - 8}" y="{top + lay.row / 2 + 3.5:.1f}" '
        f'text-anchor="end">{esc(strip_label(u))}<title>{esc(full)}</title></text>{rects}</g>'
    )


def _time_axis(lay: StripLayout) -> list[str]:
    out = []
    for v in ticks(0.0, lay.seconds, 8):
        x = lay.x(v)
        out.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{lay.top}" y2="{lay.base}"/>'
            f'<text class="tick" x="{x:.1f}" y="{lay.base + 15}" text-anchor="middle">'
            f"{esc(fmt(v, 4))}</text>"
        )
    out.append(
        f'<line class="axis" x1="{lay.label_w}" x2="{lay.width - lay.right}" y1="{lay.base}" '
        f'y2="{lay.base}"/><text class="label" x="{(lay.label_w + lay.width) / 2:.1f}" '
        f'y="{lay.height - 6}" text-anchor="middle">seconds from the cycle start</text>'
    )
    return out


def _last_answer(lay: StripLayout, use: CycleUse) -> str:
    """The end of generation: what evaluations still run right of it is the cycle's tail."""
    ends = [s.ended for u in use.actors for s in u.spans if s.kind == SpanKind.GENERATE.value]
    if not ends:
        return ""
    x = lay.x(max(ends) - use.started)
    return (
        f'<line class="answer" x1="{x:.1f}" x2="{x:.1f}" y1="{lay.top - 4}" y2="{lay.base}"/>'
        f'<text class="tick" x="{x:.1f}" y="{lay.top - 8}" text-anchor="middle">last answer'
        "</text>"
    )


def timeline_svg(use: CycleUse) -> str:
    lay = StripLayout(len(use.actors), use.seconds)
    hatch = f"lost-hatch-{use.cycle}"  # one pattern per figure: ids are page-wide
    parts = [
        f'<svg class="plot timeline" viewBox="0 0 {lay.width} {lay.height}" '
        f'width="{lay.width}" height="{lay.height}" role="img" '
        f'aria-label="actor timeline of cycle {use.cycle}" xmlns="http://www.w3.org/2000/svg">'
        f'<defs><pattern id="{hatch}" patternUnits="userSpaceOnUse" width="5" height="5" '
        'patternTransform="rotate(45)"><rect width="5" height="5" fill="#fecaca"/>'
        f'<line x1="0" y1="0" x2="0" y2="5" stroke="{LOST_COLOR}" stroke-width="2"/>'
        "</pattern></defs>",
        *_time_axis(lay),
        *(_strip(lay, i, u, use.started, hatch) for i, u in enumerate(use.actors)),
        _last_answer(lay, use),
        "</svg>",
    ]
    return "".join(parts)


def timeline_legend(use: CycleUse) -> str:
    spans = [s for u in use.actors for s in u.spans]
    kinds = [k.value for k in SpanKind if any(s.kind == k.value for s in spans)]
    keys = [
        f'<span class="key"><i style="background:{KIND_COLOR[k]};height:10px"></i>'
        f"{esc(k.replace('_', ' '))}</span>"
        for k in kinds
    ]
    if any(s.outcome == SpanOutcome.FAILED.value for s in spans):
        keys.append('<span class="key"><i class="failed"></i>failed</span>')
    if use.lost:
        keys.append(
            '<span class="key lost-key"><i class="lost"></i>lost: the actor or its node '
            f"died while holding it ({use.lost})</span>"
        )
    return f'<div class="legend" style="margin-left:0">{"".join(keys)}</div>'


def timeline_figure(use: CycleUse) -> str:
    busy_evaluators = sum(1 for u in use.actors if u.group == "evaluator")
    idle = use.evaluators - busy_evaluators
    note = f"; {idle} evaluator(s) of {use.evaluators} had no span (idle all cycle)" if idle else ""
    path = use.critical_path or "no generate-evaluate phase"
    caption = f"cycle {use.cycle}: {use.seconds:.1f} s, {path}, {len(use.actors)} actors{note}"
    return (
        f'<figure class="chart timeline" data-cycle="{use.cycle}">'
        f"<figcaption>{esc(caption)}</figcaption>{timeline_svg(use)}{timeline_legend(use)}"
        "</figure>"
    )


def advice_html(text: str) -> str:
    """The advice with its `command` as code (escaped first: backticks survive escaping)."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", esc(text))


def utilisation_table(uses: Sequence[CycleUse]) -> str:
    rows = [
        [fmt(u.cycle), f"{u.seconds:.1f}",
         *[pct(u.group_share.get(g)) for g, _ in GROUP_COLUMNS],
         esc(u.critical_path or "-"), fmt(u.evaluators), pct(u.evaluator_idle),
         fmt(u.keep_pace), fmt(u.lost)]
        for u in uses
    ]  # fmt: skip
    headers = ["cycle", "seconds", *[name for _, name in GROUP_COLUMNS], "critical path",
               "evaluators", "evaluator idle", "keep pace", "lost attempts"]  # fmt: skip
    numeric = [True, True, True, True, True, True, False, True, True, True, True]
    return table(headers, rows, numeric)


def utilisation_section(rep: RunReport) -> str:
    uses, run_id = rep.utilisation, rep.data.run_id
    claim = (
        "Busy spans of every actor (generation calls, admissions, evaluation attempts, "
        "fine-tuning) per cycle: busy share per group, whether generation or evaluation set "
        "the pace, and the evaluator count that would have kept pace with generation."
    )
    if not uses:
        body = no_data("actor timeline", "no busy spans recorded for this run")
        return (
            f'<section id="utilisation"><h2>Utilisation</h2><p class="claim">{claim}</p>'
            f"{body}</section>"
        )
    shown = uses[-TIMELINE_CYCLES:]
    which = (
        f"all {len(uses)} cycle(s) with spans"
        if len(shown) == len(uses)
        else f"the last {len(shown)} of {len(uses)} cycles with spans "
        f"({', '.join(str(u.cycle) for u in shown)})"
    )
    last = uses[-1]
    items = "".join(
        f"<li{LAST_CLASS if u is last else ''}>{advice_html(u.advice(run_id))}</li>" for u in uses
    )
    return (
        f'<section id="utilisation"><h2>Utilisation</h2><p class="claim">{claim}</p>'
        f'<div class="advice" id="utilisation-advice"><b>Last cycle:</b> '
        f"{advice_html(last.advice(run_id))}</div>"
        f"{utilisation_table(uses)}"
        f'<details><summary>advice for every cycle</summary><ul class="advice-list">{items}'
        f"</ul></details>"
        f'<p class="claim" style="margin-top:14px">Timelines of {esc(which)}: one strip per '
        "actor, a rectangle per busy span coloured by kind.</p>"
        + "".join(timeline_figure(u) for u in shown)
        + "</section>"
    )


# ---- several runs side by side ---------------------------------------------------------


def compare_row(rep: RunReport) -> dict[str, Any]:
    """One run's line of the LLM x dataset table."""
    r = rep.results
    delta = r["delta_vs_full"].numbers
    rel = r["proxy_reliability"].numbers
    mono = r["monotonicity"].numbers
    return {
        "run": rep.data.run_id,
        "model": rep.data.model,
        "dataset": rep.data.dataset,
        "budget": rep.data.budget,
        "cycles": sum(1 for c in rep.data.cycles if c.status == "completed"),
        "candidates": len(rep.data.candidates),
        "best": rep.best,
        "elite_mean": mono.get("elite_mean_last"),
        "valid_delta": delta["delta"]["rate"],
        "valid_full": delta["full"]["rate"],
        "ratio_observed": delta.get("observed_ratio"),
        "ratio_predicted": delta.get("predicted_ratio"),
        "snr": rel.get("snr"),
        "predicted_spearman": rel.get("predicted_spearman"),
        "measured_spearman": rel.get("measured_spearman"),
        "verdicts": {k: v.status for k, v in r.items()},
    }


# (key, heading, formatter, numeric)
COMPARE_COLUMNS: list[tuple[str, str, Callable[[Any], str], bool]] = [
    ("run", "run", fmt, False), ("model", "model", fmt, False),
    ("dataset", "dataset", fmt, False), ("budget", "budget", fmt, False),
    ("cycles", "cycles", fmt, True), ("candidates", "candidates", fmt, True),
    ("best", "best", fmt, True), ("elite_mean", "elite mean", fmt, True),
    ("valid_delta", "valid delta", pct, True), ("valid_full", "valid full", pct, True),
    ("ratio_observed", "ratio obs.", fmt, True), ("ratio_predicted", "ratio pred.", fmt, True),
    ("snr", "SNR", fmt, True), ("predicted_spearman", "rho_S pred.", fmt, True),
    ("measured_spearman", "rho_S meas.", fmt, True),
]  # fmt: skip


def verdict_dots(verdicts: dict[str, str]) -> str:
    """The six verdicts as small numbered, coloured marks (hover for the words)."""
    dots = "".join(
        f'<span class="dot {STATUS_CLASS.get(status, "na")}" title="{esc(key)}: {esc(status)}">'
        f"{i}</span>"
        for i, (key, status) in enumerate(verdicts.items(), start=1)
    )
    return f'<span class="dots">{dots}</span>'


def render_compare_html(reports: Sequence[RunReport], generated_at: str) -> str:
    rows = [compare_row(r) for r in reports]
    cells = [
        [esc(f(row[key])) for key, _, f, _ in COMPARE_COLUMNS] + [verdict_dots(row["verdicts"])]
        for row in rows
    ]
    numeric = [n for *_, n in COMPARE_COLUMNS] + [False]
    headers = [name for _, name, _, _ in COMPARE_COLUMNS] + ["results 1-6"]
    chart = line_chart(
        [
            Series(
                rep.data.run_id,
                rep.results["monotonicity"].series["t"],
                rep.results["monotonicity"].series["elite_mean"],
            )
            for rep in reports
        ],  # fmt: skip
        label="elite mean per cycle, every run",
        x_label="cycle t",
        y_label="elite mean",
    )
    body = (
        '<section id="compare"><h2>Runs side by side</h2><p class="claim">Rows are runs '
        "(an LLM on a dataset). Results 1-6: green supported, red not supported, grey "
        "insufficient data.</p>"
        f'<div style="overflow-x:auto">{table(headers, cells, numeric)}</div></section>'
        f'<section id="compare-elite"><h2>Elite mean per cycle</h2>{chart}</section>'
    )
    header = (
        f'<h1>Comparison of {len(reports)} runs</h1><div class="meta">'
        + ", ".join(f"<b>{esc(r.data.run_id)}</b>" for r in reports)
        + f" &middot; generated {esc(generated_at)}</div>"
    )
    return page("llmnas report: comparison", header, body, wide=True)


# ---- files -----------------------------------------------------------------------------


def _file_stem(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def _write(out_dir: Path, stem: str, html_text: str, data: Any) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    page_path, json_path = out_dir / f"{stem}.html", out_dir / f"{stem}.json"
    page_path.write_text(html_text, encoding="utf-8")
    json_path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return page_path, json_path


def write_run_report(archive: Any, run_id: str, out_dir: Path) -> tuple[Path, Path]:
    rep = build_run_report(archive, run_id)
    return _write(out_dir, _file_stem(run_id), render_run_html(rep), report_json(rep))


def write_compare_report(archive: Any, run_ids: Sequence[str], out_dir: Path) -> tuple[Path, Path]:
    reports = [build_run_report(archive, r) for r in run_ids]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = json_safe({"generated_at": now, "runs": [compare_row(r) for r in reports]})
    return _write(out_dir, "compare", render_compare_html(reports, now), data)
