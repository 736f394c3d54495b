"""The sandbox: limits, isolation actually in force on this machine, the build check."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from llmnas_dist.admission.build import build_check
from llmnas_dist.config import AdmissionConfig, EvaluationConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass
from llmnas_dist.sandbox import launch
from llmnas_dist.sandbox import runner as sandbox
from llmnas_dist.sandbox import zygote as sandbox_zygote
from llmnas_dist.sandbox.child import confine
from llmnas_dist.sandbox.runner import (
    SandboxCapabilities,
    SandboxError,
    SandboxLimits,
    run_in_sandbox,
    sandbox_capabilities,
)

SMALL_CNN = """
import torch
from torch import nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[1], 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.drop = nn.Dropout(prm["dropout"])
        self.head = nn.Linear(32, out_shape[0])
        self.to(device)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(self.drop(x.mean((2, 3))))
"""
FAST = SandboxLimits(timeout_s=10.0, memory_mb=1536, cpu_time_s=11.0, max_output_bytes=4096)
PAYLOAD = {"in_shape": [2, 1, 8, 8], "num_classes": 10, "prm": {}}


def trusted_param_count(code: str, in_shape: tuple[int, ...], classes: int) -> int:
    """The test's own in-process reference (test code, trusted)."""
    namespace: dict = {}
    exec(compile(code, "reference", "exec"), namespace)
    net = namespace["Net"]((2, *in_shape), (classes,), {"dropout": 0.1}, torch.device("cpu"))
    return sum(p.numel() for p in net.parameters())


def kernel_allows_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    flags = (
        ["--net", "--pid", "--fork"]
        if os.geteuid() == 0
        else ["--user", "--net", "--pid", "--fork"]
    )
    return subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0


def test_capabilities_are_the_strongest_this_kernel_offers():
    caps = sandbox_capabilities()
    assert caps.landlock_abi == confine.landlock_abi()
    assert caps.drop_uid == (os.geteuid() == 0)
    if kernel_allows_unshare():
        assert caps.namespaces == ("root" if os.geteuid() == 0 else "user")
        assert caps.network_isolated
    assert caps.filesystem_confined == (caps.landlock_abi > 0)


def test_limits_validate_and_map_config():
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=float("inf"))
    adm = SandboxLimits.from_admission(AdmissionConfig(build_timeout_s=7.5, memory_limit_mb=2048))
    assert (adm.timeout_s, adm.memory_mb, adm.cpu_time_s, adm.threads) == (7.5, 2048, 9, 1)
    ev = SandboxLimits.from_evaluation(EvaluationConfig(timeout_s=100, cpus_per_evaluator=2))
    assert (ev.timeout_s, ev.threads, ev.cpu_time_s) == (100, 2, 201)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="unknown sandbox task"):
        run_in_sandbox("x = 1", "mine-bitcoin", {}, FAST)
    with pytest.raises(ValueError, match="in_shape"):
        build_check(SMALL_CNN, (8, 8), 10, AdmissionConfig())
    with pytest.raises(ValueError, match="num_classes"):
        build_check(SMALL_CNN, (1, 8, 8), 0, AdmissionConfig())


@pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "fresh-interpreter"])
@pytest.mark.parametrize("shape, classes", [((1, 8, 8), 10), ((3, 32, 32), 7)])
def test_build_check_counts_parameters_and_checks_shape(shape, classes, zygote, monkeypatch):
    monkeypatch.setattr(sandbox, "USE_ZYGOTE", zygote)
    report = build_check(SMALL_CNN, shape, classes, AdmissionConfig())
    assert report.param_count == trusted_param_count(SMALL_CNN, shape, classes)
    assert report.output_shape == (2, classes)
    assert 0 < report.duration_s < AdmissionConfig().build_timeout_s


def test_build_check_rejects_over_budget():
    with pytest.raises(CandidateRejected) as info:
        build_check(SMALL_CNN, (1, 8, 8), 10, AdmissionConfig(max_params=1000))
    assert info.value.error_class is ErrorClass.TOO_LARGE
    assert str(trusted_param_count(SMALL_CNN, (1, 8, 8), 10)) in info.value.message


@pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "fresh-interpreter"])
def test_program_gets_a_scrubbed_environment_and_a_private_removed_workdir(zygote, monkeypatch):
    monkeypatch.setattr(sandbox, "USE_ZYGOTE", zygote)
    monkeypatch.setenv("LLMNAS_ARCHIVE_URL", "postgresql://leak@x/y")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    code = (
        "import os\nopen('scratch.txt', 'w').write('ok')\nprint(os.getcwd(), sorted(os.environ))\n"
    )
    out = run_in_sandbox(code, "build", PAYLOAD, FAST)
    assert out["ok"] is False and out["error_class"] is ErrorClass.BUILD_FAILED  # no Net: expected
    workdir, _, keys = out["stdout_tail"].strip().partition(" ")
    assert not Path(workdir).exists()
    assert eval(keys) == sorted(["PATH", "HOME", "TMPDIR", "LANG", *launch.THREAD_ENV_VARS])


def test_thread_counts_are_capped():
    limits = SandboxLimits(timeout_s=10.0, memory_mb=1536, cpu_time_s=21.0, threads=2)
    code = "import os, torch\nprint(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])\n"
    out = run_in_sandbox(code, "build", PAYLOAD, limits)
    assert out["stdout_tail"].split() == ["2", "2"]


def test_network_is_unreachable():
    code = (
        "import socket\ns = socket.socket()\ns.settimeout(2)\n"
        "try:\n    s.connect(('127.0.0.1', 5432))\n    print('CONNECTED')\n"
        "except OSError as exc:\n    print('refused', exc.errno)\n"
    )
    caps = sandbox_capabilities()
    if not caps.network_isolated:
        pytest.skip("no network namespace or Landlock network rules on this kernel")
    out = run_in_sandbox(code, "build", PAYLOAD, FAST)
    assert "CONNECTED" not in out["stdout_tail"]
    assert "refused" in out["stdout_tail"]


@pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "fresh-interpreter"])
def test_processes_left_behind_are_killed(zygote, monkeypatch):
    monkeypatch.setattr(sandbox, "USE_ZYGOTE", zygote)
    marker = f"llmx{os.getpid() % 100000}"
    code = f"""
import ctypes, os, time
if os.fork() == 0:
    os.setsid()
    ctypes.CDLL(None).prctl(15, b"{marker}", 0, 0, 0)  # PR_SET_NAME
    while True:
        time.sleep(1)
time.sleep(0.3)
"""
    run_in_sandbox(code, "build", PAYLOAD, FAST)
    alive = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):  # exited while we looked
            alive.append(comm.read_text().strip())
    assert marker not in alive


def test_zygote_restarts_after_it_dies():
    build_check(SMALL_CNN, (1, 8, 8), 10, AdmissionConfig())
    first = sandbox_zygote._zygote
    assert first is not None
    first.proc.kill()
    first.proc.wait()
    report = build_check(SMALL_CNN, (1, 8, 8), 10, AdmissionConfig())
    assert report.output_shape == (2, 10)
    assert sandbox_zygote._zygote is not None and sandbox_zygote._zygote.proc.poll() is None


def test_cpu_limit_maps_to_timeout():
    limits = SandboxLimits(timeout_s=20.0, memory_mb=1536, cpu_time_s=1.0)
    out = run_in_sandbox("while True:\n    pass\n", "build", PAYLOAD, limits)
    assert out["error_class"] is ErrorClass.TIMEOUT
    assert "CPU" in out["message"]
    assert out["duration_s"] < 10


def test_output_is_capped_to_a_tail():
    code = "for i in range(20000):\n    print('line', i, 'x' * 80)\nprint('THE-END')\n"
    out = run_in_sandbox(code, "build", PAYLOAD, FAST)
    tail = out["stdout_tail"]
    assert "THE-END" in tail and "earlier bytes dropped" in tail
    assert len(tail) <= FAST.max_output_bytes


@pytest.mark.parametrize(
    "frames, expected",
    [
        ([], ErrorClass.CRASHED),
        ([{"kind": "started", "worker_pid": 5}], ErrorClass.CRASHED),
        (
            [{"kind": "started", "worker_pid": 5}, {"kind": "result", "status": "ok"}],
            ErrorClass.CRASHED,
        ),
        (
            [
                {"kind": "started", "worker_pid": 5},
                {
                    "kind": "result",
                    "status": "error",
                    "error_class": "too_large",
                    "message": "x",
                    "cpu_s": 0,
                },
            ],
            ErrorClass.CRASHED,
        ),
        (
            [
                {"kind": "started", "worker_pid": 5},
                {"kind": "result", "status": "ok", "result": {}, "cpu_s": 0, "extra": 1},
            ],
            ErrorClass.CRASHED,
        ),
        (
            [
                {"kind": "started", "worker_pid": True},
                {"kind": "result", "status": "ok", "result": {}, "cpu_s": 0},
            ],
            ErrorClass.CRASHED,
        ),
        (
            [
                {"kind": "started", "worker_pid": 5},
                {
                    "kind": "result",
                    "status": "error",
                    "error_class": "timeout",
                    "message": "m",
                    "cpu_s": 1,
                },
            ],
            ErrorClass.TIMEOUT,
        ),
    ],
)
def test_result_frames_are_validated_strictly(frames, expected):
    outcome = sandbox._result_from_frames(frames, overflow=False)
    assert outcome["ok"] is False and outcome["error_class"] is expected


def test_setup_failure_is_a_sandbox_error_not_a_verdict():
    with pytest.raises(SandboxError):
        sandbox._result_from_frames([{"kind": "setup_error", "message": "no"}], overflow=False)


@pytest.mark.parametrize("mode", ["user", "none"])
def test_weaker_isolation_modes_still_build(mode, monkeypatch, tmp_path):
    """The unprivileged path (user namespace, no uid drop) and the degraded one."""
    abi = confine.landlock_abi() if mode == "user" else 0
    if mode == "user" and not (
        shutil.which("unshare")
        and subprocess.run(
            ["unshare", "--user", "--net", "--pid", "--fork", "true"], capture_output=True
        ).returncode
        == 0
    ):
        pytest.skip("user namespaces unavailable")
    monkeypatch.setattr(
        sandbox, "sandbox_capabilities", lambda: SandboxCapabilities(mode, abi, False, False)
    )
    report = build_check(SMALL_CNN, (1, 8, 8), 10, AdmissionConfig())
    assert report.param_count == trusted_param_count(SMALL_CNN, (1, 8, 8), 10)
    if mode == "user":
        # Same uid as the file, so only Landlock (when present) stops the write.
        canary = tmp_path / "canary.txt"
        canary.write_text("untouched")
        out = run_in_sandbox(f"open({str(canary)!r}, 'w').write('pwned')\n", "build", PAYLOAD, FAST)
        assert out["error_class"] is ErrorClass.BUILD_FAILED
        if abi:
            assert canary.read_text() == "untouched"
            assert "Permission" in out["message"]
