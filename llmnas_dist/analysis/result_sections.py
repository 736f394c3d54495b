"""The report's section for each of the six results: its verdict badge, claim and summary,
a plot (and table) drawn from the result's series, and the result's numbers as a
key-value table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmnas_dist.analysis.page import badge, esc, fmt, pct, table
from llmnas_dist.analysis.results import Result
from llmnas_dist.analysis.svg import Bar, Series, bar_chart, line_chart, no_data


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
