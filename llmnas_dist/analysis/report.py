"""The run report: one self-contained HTML page per run, or runs side by side, each with a
JSON file of the same numbers next to it for scripts.

This module reads the archive (any object with the Archive's read methods), computes the
six results (`results.diagnose`) and assembles the pages: the run's header, the summary
cards, one section per result (`result_sections`), the leaderboard, the failure breakdown
and the utilisation section (`utilisation_section`), drawn with the SVG kit (`svg`) inside
the page frame (`page`). The page works offline: inline CSS, inline SVG, no script, no
external fetch; everything read from the archive is escaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmnas_dist.analysis.page import MAX_MESSAGE, STATUS_CLASS, badge, esc, fmt, page, pct, table
from llmnas_dist.analysis.result_sections import PLOTS, result_section
from llmnas_dist.analysis.results import Result, diagnose
from llmnas_dist.analysis.rundata import RunData, arch_scores, load_run_data
from llmnas_dist.analysis.source import RunSource
from llmnas_dist.analysis.stats import json_safe
from llmnas_dist.analysis.svg import Series, hbar_chart, line_chart
from llmnas_dist.analysis.timeline import CycleUse, run_uses, to_json
from llmnas_dist.analysis.utilisation_section import utilisation_section
from llmnas_dist.vocab import decoding_of

TOP_K = 10
RESULT_KEYS = (
    "ce_equivalence",
    "monotonicity",
    "elite_mass",
    "delta_vs_full",
    "no_collapse",
    "proxy_reliability",
)


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


def build_run_report(archive: RunSource, run_id: str, top_k: int = TOP_K) -> RunReport:
    data = load_run_data(archive, run_id)
    return RunReport(
        data=data,
        results=diagnose(data),
        leaderboard=leaderboard(archive, run_id, top_k),
        failures=failure_breakdown(archive, data),
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        utilisation=run_utilisation(archive, run_id),
    )


def run_utilisation(archive: RunSource, run_id: str) -> list[CycleUse]:
    """Per-cycle utilisation from the archive's spans and each cycle's evaluator count
    (runs recorded before spans existed give an empty list)."""
    evaluators = {c.t: c.n_evaluators or 0 for c in archive.cycles(run_id)}
    return run_uses(archive.spans(run_id), evaluators)


def leaderboard(archive: RunSource, run_id: str, k: int) -> list[dict[str, Any]]:
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


def failure_breakdown(archive: RunSource, data: RunData) -> list[dict[str, Any]]:
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
    sections += [
        leaderboard_section(rep),
        failures_section(rep),
        utilisation_section(rep.utilisation, rep.data.run_id),
    ]
    return page(f"llmnas report: {rep.data.run_id}", run_header(rep), "".join(sections))


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


def write_run_report(archive: RunSource, run_id: str, out_dir: Path) -> tuple[Path, Path]:
    rep = build_run_report(archive, run_id)
    return _write(out_dir, _file_stem(run_id), render_run_html(rep), report_json(rep))


def write_compare_report(
    archive: RunSource, run_ids: Sequence[str], out_dir: Path
) -> tuple[Path, Path]:
    reports = [build_run_report(archive, r) for r in run_ids]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = json_safe({"generated_at": now, "runs": [compare_row(r) for r in reports]})
    return _write(out_dir, "compare", render_compare_html(reports, now), data)
