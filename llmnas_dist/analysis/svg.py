"""The SVG chart kit of the report: line charts (lines, points, error bars), bar charts
with a marker, horizontal count bars, and the empty-plot placeholder.

Charts are drawn here as inline SVG strings (no script, no external fetch); every label
goes through `esc`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmnas_dist.analysis.page import esc, fmt, pct

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04")


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
