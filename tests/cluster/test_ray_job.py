"""`ray job submit --working-dir . -- llmnas run --config ...` on a real two-node cluster:
a head and a second raylet on this machine, token authentication on, PostgreSQL archive.
The job must end SUCCEEDED, the archive must hold the completed run, and evaluations must
have run on both nodes."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fixtures import ROOT
from raylets import BIN, submit_job, two_raylets

from db.archive import Archive
from llmnas_dist.generation.models import cache_root
from llmnas_dist.vocab import RunStatus

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.postgres]

CONFIG = {
    "ce": {"cycles": 1, "candidates_per_cycle": 2, "rho": 0.25, "dataset": "digits"},
    "generation": {
        "max_new_tokens": 24,
        "max_model_len": 2048,
        "warm_start": False,
        "batch_size": 2,
        "max_retries": 0,
    },
    "evaluation": {"epochs": 0.15, "evaluators": 2, "cpus_per_evaluator": 1.0},
}


@pytest.fixture
def cluster() -> Iterator[dict[str, str]]:
    """Two raylets with token auth; yields the client environment."""
    head = ["--num-cpus=4", '--resources={"head_node": 1}']
    worker = ["--num-cpus=2", '--resources={"second_node": 1}']
    with two_raylets(head, worker, "rj") as env:
        yield env


def test_ray_job_submit_runs_the_driver_on_two_nodes(
    cluster: dict[str, str], pg_database, tmp_path: Path
) -> None:
    url = pg_database()
    config = tmp_path / "two-node.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "cluster": {"run_dir": str(tmp_path / "runs")}}))
    # the raylets run with a HOME of their own (the token's): point them at our model cache
    env_vars = {"LLMNAS_ARCHIVE_URL": url, "LLMNAS_CACHE": str(cache_root())}
    submit = submit_job(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--submission-id=llmnas-two-node",
            "--working-dir",
            ".",
            "--runtime-env-json",
            json.dumps({"env_vars": env_vars}),
            "--",
            "llmnas",
            "run",
            "--config",
            str(config),
            "--run-id",
            "two-node",
        ],
        cluster,
    )
    logs = submit.stdout + submit.stderr
    status = subprocess.run(
        [str(BIN / "ray"), "job", "status", "llmnas-two-node"],
        env=cluster,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "succeeded" in (status.stdout + status.stderr).lower(), logs[-6000:]
    with Archive.from_url(url) as archive:
        assert archive.get_run("two-node").status is RunStatus.COMPLETED
        assert archive.last_completed_cycle("two-node") == 1
        nodes = {e.node_id for e in archive.evaluations("two-node") if e.node_id}
    assert len(nodes) == 2, f"evaluations ran on {nodes}"


def test_job_submit_without_the_token_is_refused(cluster: dict[str, str]) -> None:
    env = {**cluster, "HOME": tempfile.mkdtemp(prefix="notoken")}
    refused = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--", "echo", "hi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
    assert "token" in (refused.stdout + refused.stderr).lower()
