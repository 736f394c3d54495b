"""The report's utilisation section: where each cycle's time went.

Per cycle, a table of busy shares per actor group, the critical path and the evaluator
count that would have kept pace, the scaling advice, and (for the last few cycles) a
timeline: one SVG strip per actor, a rectangle per busy span coloured by kind, lost spans
hatched, failed ones dashed. The numbers come from `timeline`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from llmnas_dist.analysis.page import MAX_MESSAGE, esc, fmt, pct, table
from llmnas_dist.analysis.svg import PALETTE, no_data, ticks
from llmnas_dist.analysis.timeline import ActorUse, CycleUse
from llmnas_dist.spans import Span, SpanKind, SpanOutcome

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


def utilisation_section(uses: Sequence[CycleUse], run_id: str) -> str:
    """The section of one run: `uses` has one entry per cycle with spans (may be none)."""
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
