"""`llmnas report` on a synthetic run written through the Archive API; the page is opened in
headless Chromium (integration) and its DOM and screenshot are checked."""

from __future__ import annotations

import html
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from db.archive import Archive
from llmnas_dist.admission.novelty import minhash
from llmnas_dist.analysis.report import RESULT_KEYS
from llmnas_dist.cli.main import main
from llmnas_dist.seeds import load_seeds
from llmnas_dist.spans import Span
from llmnas_dist.vocab import CandidateStatus, code_hash

CHROMIUM = "/usr/bin/chromium"
SECTIONS = ("summary", *RESULT_KEYS, "leaderboard", "failures", "utilisation")
HOSTILE = "</pre><script>alert('code')</script><img src=x onerror=alert(1)>"
HOSTILE_MESSAGE = "<script>alert('message')</script>"
BUDGET = "epochs=1"
CYCLES = 3
# every CE cycle has 10 slots: 0-6 delta, 7-9 full
DELTA_REJECT = {0: "hunk_not_found", 1: "no_delta", 2: "not_novel"}
FULL_REJECT = {7: "syntax_error"}


def _config(threshold: float) -> dict:
    return {
        "ce": {"rho": 0.25, "min_elites": 2, "cycles": CYCLES, "candidates_per_cycle": 10},
        "generation": {"model": "tiny<b>model</b>"},
        "evaluation": {"noise_sample": 4, "noise_seeds": 2, "reference_epochs": 5},
        "reliability": {"snr_threshold": threshold},
    }


class RunBuilder:
    """Writes a run the way the driver does: cycle 0 holds seed programs, CE cycles 1..T."""

    def __init__(self, archive: Archive, run_id: str, threshold: float, seed: int = 0) -> None:
        self.archive, self.run_id = archive, run_id
        self.rng = random.Random(seed)
        self.scores: dict[str, float] = {}  # seed-0 score of every evaluated program
        self.seeds = sorted(load_seeds().items())
        archive.create_run(_config(threshold), run_id=run_id, dataset="digits", budget=BUDGET)

    def program(self, t: int, slot: int) -> str:
        code = self.seeds[(t * 10 + slot) % len(self.seeds)][1]
        extra = f"\nEXTRA_{self.run_id.replace('-', '_')}_{t}_{slot} = {slot}\n"
        extra += f"WIDE = {'x' * 240!r}\n"  # a long line must not widen the leaderboard
        if (t, slot) == (CYCLES, 3):  # among the best: shown with its code
            extra += f"BANNER = {HOSTILE!r}\n"  # generated code is hostile text
        return code + extra

    def admit(self, cid: str, code: str) -> str:
        self.archive.add_architecture(
            code, signature=minhash(code), shingle_size=7, param_count=1000, run_id=self.run_id
        )
        h = code_hash(code)
        self.archive.update_candidate_status(cid, CandidateStatus.ADMITTED, arch_hash=h)
        return h

    def evaluate(self, cid: str, h: str, score: float | None) -> None:
        self.archive.update_candidate_status(cid, CandidateStatus.EVALUATING)
        self.archive.record_evaluation(
            self.run_id, h, dataset="digits", seed=0, budget=BUDGET, score=score,
            candidate_id=cid, error_class=None if score is not None else "timeout",
        )  # fmt: skip
        if score is not None:
            self.scores[h] = score
        final = CandidateStatus.EVALUATED if score is not None else CandidateStatus.FAILED
        self.archive.update_candidate_status(
            cid, final, error_class=None if score is not None else "timeout"
        )

    def seed_cycle(self) -> list[str]:
        self.archive.start_cycle(self.run_id, 0, 1, {"seeds": 1, "budget": BUDGET})
        hashes = []
        for i in range(3):
            cid = self.archive.add_candidate(self.run_id, 0, i, mode="full", raw_output="")
            h = self.admit(cid, self.program(0, i))
            self.evaluate(cid, h, 0.30 + 0.02 * i)
            hashes.append(h)
        self.archive.record_adapter(self.run_id, 0, 0, path="a/v0", base_model="m", n_examples=24,
                                    train_loss=1.2)  # fmt: skip
        self.close(0)
        return hashes

    def ce_cycle(self, t: int, parents: list[str], gate: dict) -> list[str]:
        self.archive.start_cycle(self.run_id, t, 1, {"seeds": 1, "budget": BUDGET, "gate": gate})
        admitted = []
        for slot in range(10):
            mode = "delta" if slot < 7 else "full"
            cid = self.archive.add_candidate(
                self.run_id, t, slot, mode=mode, prompt="p", raw_output="out",
                parent_hash=parents[slot % len(parents)], adapter_version=t - 1,
                output_tokens=60 + slot if mode == "delta" else 300 + slot,
            )  # fmt: skip
            reject = (DELTA_REJECT | FULL_REJECT).get(slot)
            if reject:
                self.archive.update_candidate_status(
                    cid, CandidateStatus.REJECTED, error_class=reject, message=HOSTILE_MESSAGE
                )
                continue
            h = self.admit(cid, self.program(t, slot))
            score = None if slot == 9 and t == 2 else 0.4 + 0.1 * t + self.rng.uniform(0, 0.1)
            self.evaluate(cid, h, score)
            if score is not None:
                admitted.append(h)
        self.archive.record_adapter(self.run_id, t, t, path=f"a/v{t}", base_model="m",
                                    n_examples=4 + t, train_loss=1.0 / t)  # fmt: skip
        self.close(t)
        return admitted

    def studies(self, hashes: list[str]) -> None:
        """Noise study (a second seed) and reference study (epochs=5) on a sample."""
        for h in hashes:
            first = self.scores[h]
            noisy = first + self.rng.uniform(-0.02, 0.02)
            self.archive.record_evaluation(self.run_id, h, dataset="digits", seed=1,
                                           budget=BUDGET, score=noisy)  # fmt: skip
            self.archive.record_evaluation(self.run_id, h, dataset="digits", seed=0,
                                           budget="epochs=5", score=first + 0.3)  # fmt: skip

    def close(self, t: int) -> None:
        gamma, elites = self.archive.elites(self.run_id, 0.25, min_elites=2)
        self.archive.complete_cycle(self.run_id, t, gamma, len(elites), elites)

    def build(self) -> None:
        parents = self.seed_cycle()
        studied: list[str] = []
        for t in range(1, CYCLES + 1):
            gate = {"snr": 0.5, "threshold": 1.0, "n_archs": 3, "low": True} if t == 3 else {}
            admitted = self.ce_cycle(t, parents, gate)
            studied += admitted[:2]
            parents = [e.hash for e in self.archive.elites(self.run_id, 0.25, min_elites=2)[1]]
        self.studies(studied)
        self.archive.finish_run(self.run_id)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An SQLite archive with two runs, r1 (gate warning) and r2; returns its URL."""
    url = f"sqlite:///{tmp_path_factory.mktemp('runs') / 'archive.db'}"
    with Archive.from_url(url) as archive:
        RunBuilder(archive, "r1", threshold=1e6).build()
        RunBuilder(archive, "r2", threshold=0.0, seed=1).build()
        archive.create_run(_config(1.0), run_id="r0")  # nothing happened yet
    return url


def report(url: str, out: Path, *args: str) -> int:
    return main(["report", *args, "--out", str(out), "--archive", url])


def test_report_page_and_json(runs: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert report(runs, out, "r1") == 0
    assert f"wrote {out / 'r1.html'}" in capsys.readouterr().out
    page = (out / "r1.html").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'id="{section}"' in page
    assert page.count("<svg") >= 7  # one plot per result, at least, and the failures
    assert "<script" not in page and "onerror=alert(1)>" not in page
    assert "&lt;script&gt;alert(&#x27;code&#x27;)" in page  # shown, escaped
    assert "&lt;script&gt;alert(&#x27;message&#x27;)" in page
    assert "tiny&lt;b&gt;model&lt;/b&gt;" in page and 'id="gate-warning"' in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page  # nothing to fetch: the page works offline

    data = json.loads((out / "r1.json").read_text(), parse_constant=pytest.fail)
    res = data["results"]
    assert list(res) == list(RESULT_KEYS)
    # 3 CE cycles: delta slots 0-6 with 0, 1 invalid (2 is valid, only not novel); full 7-9
    # with 7 invalid (9's evaluation fails in cycle 2, but its program was valid)
    delta = res["delta_vs_full"]["numbers"]
    assert (delta["delta"]["n"], delta["delta"]["valid"]) == (21, 15)
    assert (delta["full"]["n"], delta["full"]["valid"]) == (9, 6)
    assert delta["delta"]["mean_tokens"] == pytest.approx(63)
    assert res["no_collapse"]["series"]["rejection_rate"] == pytest.approx([1 / 7] * 3)
    assert res["ce_equivalence"]["status"] == "supported"
    assert res["ce_equivalence"]["series"]["n_examples"] == [5, 6, 7]
    assert res["monotonicity"]["status"] == "supported"  # scores rise by 0.1 per cycle
    assert res["proxy_reliability"]["samples"]["noise_archs"] == 6
    assert res["proxy_reliability"]["samples"]["reference_pairs"] == 6
    assert res["proxy_reliability"]["numbers"]["measured_spearman"] == pytest.approx(1.0)
    assert res["proxy_reliability"]["numbers"]["gate"]["low"] is True
    assert {r["status"] for r in res.values()} <= {
        "supported",
        "not supported",
        "insufficient data",
    }
    assert len(data["leaderboard"]) == 10 and data["leaderboard"][0]["lineage"]
    failures = {f["error_class"]: f for f in data["failures"]}
    assert failures["hunk_not_found"]["count"] == 3 and failures["timeout"]["stage"] == "evaluation"


def test_a_run_with_no_data_reports_insufficient_data(runs: str, tmp_path: Path) -> None:
    assert report(runs, tmp_path, "r0") == 0
    data = json.loads((tmp_path / "r0.json").read_text())
    assert {r["status"] for r in data["results"].values()} == {"insufficient data"}
    page = (tmp_path / "r0.html").read_text(encoding="utf-8")
    assert all(f'id="{s}"' in page for s in SECTIONS) and "no data to plot yet" in page
    assert data["utilisation"] == [] and "no busy spans recorded for this run" in page


def test_compare_and_bad_input(runs: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    assert report(runs, out, "--compare", "r1", "r2") == 0
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert page.count("<tr>") == 3 and "r1" in page and "r2" in page
    rows = json.loads((out / "compare.json").read_text())["runs"]
    assert [r["run"] for r in rows] == ["r1", "r2"] and rows[0]["valid_delta"] == pytest.approx(
        15 / 21
    )
    capsys.readouterr()
    for argv, message in [
        (["nope"], "no run 'nope'"),
        (["--compare", "r1", "nope"], "no run 'nope'"),
        (["r1", "--compare", "r1", "r2"], "not both"),
        ([], "give one RUN"),
        (["--compare", "r1"], "at least two"),
    ]:
        assert report(runs, tmp_path / "bad", *argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("llmnas: error:") and message in err, err
    assert main(["report", "r1", "--archive", f"sqlite:///{tmp_path / 'missing.db'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- headless Chromium -----------------------------------------------------------------


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """(width, height, decompressed scanlines) of a PNG: enough to tell blank from drawn."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos : pos + 4])
        kind, body = raw[pos + 4 : pos + 8], raw[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def chromium_binary() -> str:
    found = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if found is None:
        reason = f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def chromium(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--no-first-run", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


# Appended to a copy of the page (the report itself has no script): lists every table
# whose right edge passes its card's (or section's) at the window width
LAYOUT_PROBE = """<script>
const bad = [];
for (const t of document.querySelectorAll("table")) {
  const box = t.closest(".card, section");
  const over = t.getBoundingClientRect().right - box.getBoundingClientRect().right;
  if (over > 1) bad.push((box.id || box.className) + " +" + Math.round(over) + "px");
}
document.body.insertAdjacentHTML("beforeend",
  "<pre id='layout-probe'>" + JSON.stringify(bad) + "</pre>");
</script>"""


def overflowing_tables(binary: str, profile: str, page: Path, tmp_path: Path) -> list[str]:
    """The tables wider than their card when the page is laid out 1280 px wide."""
    probe = tmp_path / "probe.html"
    # the page's Content-Security-Policy forbids scripts: the copy drops it
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page.read_text())
    probe.write_text(text.replace("</body>", LAYOUT_PROBE + "</body>"))
    dom = chromium(binary, profile, "--window-size=1280,2000", "--dump-dom", probe.as_uri())
    found = re.search(r"<pre id=\"layout-probe\">(.*?)</pre>", dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.integration
def test_report_in_headless_chromium(runs: str, tmp_path: Path) -> None:
    binary = chromium_binary()
    out = tmp_path / "out"
    assert report(runs, out, "r1") == 0
    url = (out / "r1.html").resolve().as_uri()
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    dom = chromium(binary, profile, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert f'id="{section}"' in dom.stdout, section
    assert dom.stdout.count("<svg") >= 7 and "<script" not in dom.stdout
    assert "<img" not in dom.stdout  # the hostile markup stayed text
    assert overflowing_tables(binary, profile, out / "r1.html", tmp_path) == []
    shot = tmp_path / "report.png"
    done = chromium(binary, profile, f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1280, 2000)
    assert len(set(pixels)) > 50, "the screenshot is blank"


def test_missing_chromium_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="is missing"):
        chromium_binary()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        chromium_binary()


# ---- utilisation -----------------------------------------------------------------------

T0 = 1_700_000_000.0
NODE_A = "a3" * 28  # Ray node ids are 56 hex digits
GEN, FT = "9f" * 16, "7e" * 16  # Ray actor ids are 32
EVALS = ["e1" * 16, "e2" * 16, "e3" * 16]


def _span(kind: str, actor: str, start: float, end: float, t: int, **kw) -> Span:
    return Span(kind, actor, T0 + 1000 * t + start, T0 + 1000 * t + end, cycle=t, **kw)


def evaluation_bound_cycle(t: int = 1) -> list[Span]:
    """Cycle [0, 50] s; generation [0, 20]; evaluations until 40; one attempt lost.

    busy: generator 20 of 50 (its calls overlap in [10, 12]), driver 2, e1 27 ([13, 35] u
    [21, 40]), e2 5 + 19, e3 20, fine-tuner 10. Evaluation work in [0, 40]: 71 s, 57 s of it
    after the last answer; the longest evaluation takes 11 s (so keep pace: ceil(57/11) = 6)."""
    e1, e2, e3 = EVALS
    gpu = {"node_id": NODE_A}
    return [
        _span("generate", GEN, 0, 12, t, gpu_id="0", **gpu),
        _span("generate", GEN, 10, 20, t, gpu_id="0", **gpu),
        _span("admit", "driver", 12, 13, t, **gpu),
        _span("admit", "driver", 20, 21, t, **gpu),
        _span("evaluate", e1, 13, 24, t, gpu_id="1", key="c1", **gpu),
        _span("evaluate", e1, 24, 35, t, gpu_id="1", key="c5", **gpu),
        _span("evaluate", e1, 21, 31, t, gpu_id="1", key="c3", **gpu),
        _span("evaluate", e1, 31, 40, t, gpu_id="1", key="c6", **gpu),
        _span("evaluate", e2, 13, 18, t, gpu_id="2", key="c2", outcome="lost",
              message=HOSTILE_MESSAGE, **gpu),
        _span("evaluate", e2, 21, 30, t, gpu_id="2", key="c4", **gpu),
        _span("evaluate", e2, 30, 40, t, gpu_id="2", key="c7", **gpu),
        _span("evaluate", e3, 18, 28, t, gpu_id="3", key="c2", attempt=2, **gpu),
        _span("evaluate", e3, 28, 38, t, gpu_id="3", key="c8", **gpu),
        _span("finetune", FT, 40, 50, t, gpu_id="0", **gpu),
    ]  # fmt: skip


def idle_evaluators_cycle(t: int = 2) -> list[Span]:
    """Cycle [0, 50] s: generation [0, 40]; of 3 evaluators only e1 works (10 s, ending at
    43 s: within 10% of the generation time, so generation-bound); driver 3 s; ft 7 s."""
    e1 = EVALS[0]
    return [
        _span("generate", GEN, 0, 20, t, node_id=NODE_A, gpu_id="0"),
        _span("generate", GEN, 20, 40, t, node_id=NODE_A, gpu_id="0"),
        *(_span("admit", "driver", a, a + 1, t) for a in (10, 20, 40)),
        *(_span("evaluate", e1, a, b, t, node_id=NODE_A, gpu_id="1")
          for a, b in ((11, 15), (21, 25), (41, 43))),
        _span("finetune", FT, 43, 50, t, node_id=NODE_A, gpu_id="0"),
    ]  # fmt: skip


def busy_cluster_cycle(t: int, rng: random.Random) -> list[Span]:
    """A big cycle: 2 generators (4 GPUs each), the driver, 34 evaluators on 4 nodes, one
    fine-tuner: 38 strips and several hundred spans, some failed or lost."""
    nodes = [f"{n:02x}" * 28 for n in (0xB1, 0xB2, 0xB3, 0xB4)]
    spans = []
    for g in range(2):
        clock = 0.0
        while clock < 300:
            end = clock + rng.uniform(5, 15)
            spans.append(_span("generate", f"{g:02x}" * 16, clock, end, t, node_id=nodes[0],
                               gpu_id="0,1,2,3" if g == 0 else "4,5,6,7"))  # fmt: skip
            spans += [_span("admit", "driver", end + i * 0.05, end + i * 0.05 + 0.04, t)
                      for i in range(4)]  # fmt: skip
            clock = end
    for e in range(34):
        clock = rng.uniform(5, 20)
        while clock < 330:
            end = clock + rng.uniform(10, 40)
            outcome = rng.choices(["ok", "failed", "lost"], [0.9, 0.06, 0.04])[0]
            spans.append(_span("evaluate", f"{0x40 + e:02x}" * 16, clock, end, t,
                               node_id=nodes[e % 4], gpu_id=str(e % 8), outcome=outcome,
                               key=f"c{e}-{clock:.0f}"))  # fmt: skip
            clock = end + rng.uniform(0, 4)
    spans.append(_span("finetune", "ff" * 16, 360, 420, t, node_id=nodes[1], gpu_id="0,1"))
    return spans


@pytest.fixture(scope="module")
def util_runs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """u1: two cycles of hand-computed spans with 3 evaluators; u2: a full synthetic run
    (RunBuilder) whose 4 cycles are each a 38-actor cluster."""
    url = f"sqlite:///{tmp_path_factory.mktemp('util') / 'archive.db'}"
    with Archive.from_url(url) as archive:
        archive.create_run(_config(1.0), run_id="u1", dataset="digits", budget=BUDGET)
        for t, spans in ((1, evaluation_bound_cycle()), (2, idle_evaluators_cycle())):
            archive.start_cycle("u1", t, 3)
            archive.record_spans("u1", spans)
            archive.complete_cycle("u1", t)
        RunBuilder(archive, "u2", threshold=0.0, seed=2).build()
        rng = random.Random(7)
        for t in range(CYCLES + 1):
            archive.record_spans("u2", busy_cluster_cycle(t, rng))
    return url


def utilisation_html(page: str) -> str:
    found = re.search(r'<section id="utilisation">.*?</section>', page, re.S)
    assert found, "no utilisation section"
    return found.group(0)


def test_utilisation_numbers_in_the_json(util_runs: str, tmp_path: Path) -> None:
    assert report(util_runs, tmp_path, "u1") == 0
    data = json.loads((tmp_path / "u1.json").read_text(), parse_constant=pytest.fail)
    first, second = data["utilisation"]
    assert (first["cycle"], first["seconds"], second["cycle"], second["seconds"]) == (1, 50, 2, 50)
    assert first["group_share"] == pytest.approx(
        {"generator": 0.4, "evaluator": round(1.42 / 3, 4), "finetuner": 0.2, "driver": 0.04}
    )
    shares = {a["actor"]: a["share"] for a in first["actors"]}
    assert shares == pytest.approx(
        {GEN: 0.4, "driver": 0.04, EVALS[0]: 0.54, EVALS[1]: 0.48, EVALS[2]: 0.4, FT: 0.2}
    )
    assert first["critical_path"] == "evaluation-bound" and first["tail_s"] == 20
    assert first["evaluator_idle"] == round(1 - 71 / 120, 4)
    assert (first["keep_pace"], first["lost_attempts"], first["evaluators"]) == (6, 1, 3)
    assert first["advice"].startswith("cycle 1 was evaluation-bound")
    assert first["advice"].endswith("`llmnas scale u1 6`")
    # cycle 2: e1 busy 10 of 50 s, the two idle evaluators count: 0.2 / 3
    assert second["group_share"] == pytest.approx(
        {"generator": 0.8, "evaluator": round(0.2 / 3, 4), "finetuner": 0.14, "driver": 0.06}
    )
    assert second["critical_path"] == "generation-bound" and second["tail_s"] == 3
    assert second["evaluator_idle"] == round(1 - 10 / (3 * 43), 4)
    assert (second["keep_pace"], second["lost_attempts"]) == (1, 0)
    assert "1 evaluator(s) would have kept pace: `llmnas scale u1 1`" in second["advice"]


def test_utilisation_section_strips_lost_marker_and_advice(util_runs: str, tmp_path: Path) -> None:
    assert report(util_runs, tmp_path, "u1") == 0
    page = (tmp_path / "u1.html").read_text(encoding="utf-8")
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;message&#x27;)" in page
    section = utilisation_html(page)
    figures = re.findall(r'<figure class="chart timeline" data-cycle="(\d+)">(.*?)</figure>',
                         section, re.S)  # fmt: skip
    assert [t for t, _ in figures] == ["1", "2"]  # few cycles: all are drawn
    strips = [re.findall(r'<g class="strip" data-actor="([^"]*)"', f) for _, f in figures]
    assert strips[0] == [GEN, *EVALS, FT, "driver"]  # one strip per actor, by group
    assert strips[1] == [GEN, EVALS[0], FT, "driver"]  # idle evaluators have no strip
    assert "2 evaluator(s) of 3 had no span" in figures[1][1]
    # the SVG grows by one row (18 px) per strip
    heights = [int(re.search(r'<svg class="plot timeline"[^>]* height="(\d+)"', f).group(1))
               for _, f in figures]  # fmt: skip
    assert heights[0] - heights[1] == 2 * 18
    assert f"generator {GEN[:8]} @{NODE_A[:6]} gpu 0<title>" in figures[0][1]
    # the lost attempt: hatched, red, in cycle 1 only, and explained in the legend
    assert section.count('class="span lost"') == 1
    lost = re.search(r'<rect class="span lost"[^>]*>', figures[0][1])
    assert lost and 'fill="url(#lost-hatch-1)"' in lost.group(0) and "#dc2626" in lost.group(0)
    assert '<pattern id="lost-hatch-1"' in figures[0][1]
    assert "lost: the actor or its node died while holding it (1)" in figures[0][1]
    assert "lost:" not in figures[1][1]
    # table: one row per cycle with the hand-computed shares
    rows = re.findall(r"<tr>(.*?)</tr>", section, re.S)[1:]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows]
    assert cells[0] == ["1", "50.0", "40.0%", "47.3%", "20.0%", "4.0%", "evaluation-bound",
                        "3", "40.8%", "6", "1"]  # fmt: skip
    assert cells[1] == ["2", "50.0", "80.0%", "6.7%", "14.0%", "6.0%", "generation-bound",
                        "3", "92.2%", "1", "0"]  # fmt: skip
    # the last cycle's advice is highlighted; every cycle's is listed
    box = re.search(r'<div class="advice" id="utilisation-advice">(.*?)</div>', section, re.S)
    assert box and "<code>llmnas scale u1 1</code>" in box.group(1)
    assert '<li class="last">' in section and "<code>llmnas scale u1 6</code>" in section
    assert 'href="#utilisation"' in page


def test_utilisation_shows_the_last_cycles_of_a_long_run(util_runs: str, tmp_path: Path) -> None:
    assert report(util_runs, tmp_path, "u2") == 0
    section = utilisation_html((tmp_path / "u2.html").read_text(encoding="utf-8"))
    assert re.findall(r'data-cycle="(\d+)"', section) == ["1", "2", "3"]
    assert "the last 3 of 4 cycles with spans (1, 2, 3)" in section
    assert section.count('<g class="strip"') == 3 * 38
    data = json.loads((tmp_path / "u2.json").read_text())
    assert [u["cycle"] for u in data["utilisation"]] == [0, 1, 2, 3]  # the JSON has all
    assert all(len(u["actors"]) == 38 for u in data["utilisation"])


# everything in the utilisation section must stay inside its content box, and no strip
# label may run off the left of its SVG (long actor and node ids)
UTILISATION_PROBE = """<script>
const sec = document.getElementById("utilisation");
const style = getComputedStyle(sec);
const inner = sec.getBoundingClientRect().right - parseFloat(style.paddingRight)
  - parseFloat(style.borderRightWidth);
const bad = [];
for (const el of sec.querySelectorAll("table, svg, figure, .advice, .legend, ul, p")) {
  const over = el.getBoundingClientRect().right - inner;
  if (over > 1) bad.push(el.tagName + "." + el.getAttribute("class") + " +" + Math.round(over));
}
if (sec.scrollWidth > sec.clientWidth) bad.push("section scrolls " + sec.scrollWidth);
for (const t of sec.querySelectorAll("text.strip-label")) {
  if (t.getBBox().x < 0) bad.push("label cut: " + t.textContent);
}
const widths = [...sec.querySelectorAll("svg.timeline")].map(
  s => Math.round(s.getBoundingClientRect().width));
document.body.insertAdjacentHTML("beforeend", "<pre id='util-probe'>"
  + JSON.stringify({bad: bad, widths: widths}) + "</pre>");
</script>"""


@pytest.mark.integration
def test_utilisation_fits_its_card_in_headless_chromium(util_runs: str, tmp_path: Path) -> None:
    binary = chromium_binary()
    out = tmp_path / "out"
    assert report(util_runs, out, "u2") == 0
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    assert overflowing_tables(binary, profile, out / "u2.html", tmp_path) == []
    probe = tmp_path / "util-probe.html"
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "",
                  (out / "u2.html").read_text())  # fmt: skip
    probe.write_text(text.replace("</body>", UTILISATION_PROBE + "</body>"))
    dom = chromium(binary, profile, "--window-size=1280,2000", "--dump-dom", probe.as_uri())
    found = re.search(r"<pre id=\"util-probe\">(.*?)</pre>", dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    assert result["bad"] == []
    # drawn at full size, not shrunk to fit: 38 strips stay readable
    assert result["widths"] == [1000, 1000, 1000]
