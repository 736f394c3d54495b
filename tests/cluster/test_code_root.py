"""The actors import the driver's code, not whatever the driver's working directory holds.

Ray puts the driver's working directory on its workers' sys.path. A user who starts a run
inside another checkout of llmnas-dist (or any folder with a package named like one of
ours: `db`, `workers`, `cluster`) must still get actors that run the driver's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DRIVER = """
import json, os, sys
import ray
import db, llmnas_dist, workers
from cluster.factory import connect_ray
from llmnas_dist.config import Config

@ray.remote
def imported() -> dict:
    import db, llmnas_dist, workers
    return {m.__name__: m.__file__ for m in (db, llmnas_dist, workers)}

cwd = os.getcwd()
started = connect_ray(Config(), 1)
remote = ray.get(imported.remote())
print(json.dumps({
    "started": started,
    "cwd_kept": os.getcwd() == cwd,
    "driver": {m.__name__: m.__file__ for m in (db, llmnas_dist, workers)},
    "actor": remote,
}))
ray.shutdown()
"""


def test_workers_import_the_drivers_code_from_inside_another_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "other-checkout"
    for package in ("db", "llmnas_dist", "workers"):
        (checkout / package).mkdir(parents=True)
        (checkout / package / "__init__.py").write_text("SHADOW = True\n")
    script = tmp_path / "driver" / "drive.py"
    script.parent.mkdir()
    script.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["started"] and result["cwd_kept"]
    assert not any(str(checkout) in path for path in result["driver"].values())
    # without connect_ray's code root the actor imported all three from the checkout
    assert result["actor"] == result["driver"]
