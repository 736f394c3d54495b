"""`llmnas eval`: exit statuses, JSON output, and reproducibility across processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import HANGS_IN_TRAINING, NAN_NET

from llmnas_dist.cli.main import main
from llmnas_dist.seeds import load_seeds


@pytest.fixture()
def program(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(load_seeds()["plain_cnn"], encoding="utf-8")
    return path


def _eval_json(program: Path, seed: int) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmnas_dist.cli.main",
            "eval",
            str(program),
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--seed",
            str(seed),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_same_seed_same_accuracy_across_processes(program: Path) -> None:
    first, second = _eval_json(program, 11), _eval_json(program, 11)
    for key in ("accuracy", "loss", "duration_s", "samples_per_s", "params"):
        assert key in first
    assert first["accuracy"] == second["accuracy"] and first["loss"] == second["loss"]
    assert first["ok"] is True and first["seed"] == 11 and 0.0 <= first["accuracy"] <= 1.0


def test_failed_evaluation_exits_1_with_reason(tmp_path: Path, capsys) -> None:
    path = tmp_path / "nan.py"
    path.write_text(NAN_NET, encoding="utf-8")
    assert main(["eval", str(path), "--dataset", "digits", "--epochs", "0.2"]) == 1
    out = capsys.readouterr().out
    assert "failed: nan_output" in out and "NaN" in out


def test_text_output_of_a_budgeted_run(program: Path, capsys) -> None:
    assert main(["eval", str(program), "--budget-s", "0.5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("evaluated: accuracy") and "budget budget_s=0.5" in out


@pytest.mark.parametrize(
    "extra",
    [
        ["--dataset", "nosuch"],
        ["--epochs", "0"],
        ["--budget-s", "-3"],
        ["--seed", "-1"],
        ["--dataset", "cifar10"],  # no data root configured
    ],
)
def test_bad_usage_exits_2(program: Path, extra: list[str], capsys) -> None:
    assert main(["eval", str(program), *extra]) == 2
    assert capsys.readouterr().err.startswith("llmnas: error:")


def test_missing_program_and_conflicting_budgets_exit_2(tmp_path: Path, program: Path) -> None:
    assert main(["eval", str(tmp_path / "absent.py")]) == 2
    with pytest.raises(SystemExit) as exc:  # argparse: mutually exclusive flags
        main(["eval", str(program), "--epochs", "1", "--budget-s", "1"])
    assert exc.value.code == 2


def test_a_program_that_hangs_costs_the_adaptive_deadline(tmp_path: Path, capsys) -> None:
    """The archive knows one-epoch digits evaluations take about 2 s: a program that
    hangs after three training steps is stopped at the 6 s floor, not at timeout_s."""
    from db.archive import Archive
    from llmnas_dist.config import build_config, dump_config
    from llmnas_dist.vocab import code_hash

    url = f"sqlite:///{tmp_path / 'archive.db'}"
    cfg = build_config(
        {
            "archive": {"url": url},
            "evaluation": {"timeout_s": 300, "deadline_floor_s": 6, "deadline_min_samples": 3},
        }
    )
    with Archive(cfg.archive) as archive:
        archive.create_run(cfg, run_id="history")
        for seed, seconds in enumerate([1.5, 2.0, 2.5]):
            code = load_seeds()["plain_cnn"] + f"\n# variant {seed}\n"
            archive.add_architecture(code)
            arch = code_hash(code)
            archive.record_evaluation(
                "history", arch, dataset="digits", seed=seed, budget="epochs=1",
                score=0.9, duration_s=seconds,
            )  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(dump_config(cfg), encoding="utf-8")
    hang = tmp_path / "hang.py"
    hang.write_text(HANGS_IN_TRAINING, encoding="utf-8")
    args = ["eval", str(hang), "--config", str(config), "--dataset", "digits", "--epochs", "1"]
    assert main([*args, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    # 5 x the median 2 s is 10 s, over the 6 s floor
    assert out["deadline_s"] == pytest.approx(10.0)
    assert out["error_class"] == "timeout" and out["accuracy"] is None
    assert main([*args, "--timeout-s", "3"]) == 1
    text = capsys.readouterr().out
    assert "failed: timeout" in text and "deadline: 3 s" in text
