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

from db.archive import Archive, code_hash
from db.models import CandidateStatus
from llmnas_dist.cli import main
from llmnas_dist.novelty import minhash
from llmnas_dist.report import RESULT_KEYS
from llmnas_dist.seeds import load_seeds

CHROMIUM = "/usr/bin/chromium"
SECTIONS = ("summary", *RESULT_KEYS, "leaderboard", "failures")
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
