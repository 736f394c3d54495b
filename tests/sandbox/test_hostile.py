"""The hostile-program suite: every program in tests/sandbox/hostile/ against both barriers.

Each program's header says what it attempts and what must happen:
`# expect-static:` the error class(es) check_static must raise ("-": not statically
visible), `# expect-runtime:` the outcome(s) of the sandboxed build of the raw program,
static checks bypassed ("ok": it builds, harmlessly). The placeholders CANARY_PATH and
TOKEN_PATH become a world-writable canary file and a world-readable token file outside the
sandbox, so only the sandbox (not file modes) stands between the program and them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from llmnas_dist.admission.build import build_verdict
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected
from llmnas_dist.sandbox import runner as sandbox
from llmnas_dist.sandbox.gpus import NvidiaGpu, gpu_grant
from llmnas_dist.sandbox.runner import SandboxLimits, run_in_sandbox

HOSTILE_DIR = Path(__file__).parent / "hostile"
PROGRAMS = sorted(HOSTILE_DIR.glob("*.py"))
LIMITS = SandboxLimits(
    timeout_s=4.0,
    memory_mb=1536,
    cpu_time_s=5.0,
    max_processes=64,
    max_file_bytes=16 * 1024 * 1024,
    max_output_bytes=8192,
)
STARTUP_MARGIN_S = 60.0  # interpreter + torch import on a loaded 2-core machine
SECRET_URL = "postgresql://secret-canary-url@db.invalid:5432/archive"
SECRET_TOKEN = "secret-canary-token-5f1e"
TOKEN_FILE_TEXT = "secret-canary-file-9c2d"
CANARY_TEXT = "canary: untouched\n"
NUM_CLASSES = 10
IN_SHAPE = [2, 1, 8, 8]


def read_header(path: Path) -> dict[str, str]:
    header = dict(re.findall(r"^# ([a-z-]+): (.*)$", path.read_text(), flags=re.M))
    for key in ("attempts", "expect-static", "expect-runtime"):
        if key not in header:
            raise ValueError(f"{path.name}: header lacks '# {key}:'")
    return header


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory):
    """A world-writable folder outside the sandbox with a canary and a token file."""
    folder = Path(tempfile.mkdtemp(prefix="llmnas-hostile-"))
    folder.chmod(0o777)
    canary = folder / "canary.txt"
    canary.write_text(CANARY_TEXT)
    canary.chmod(0o666)
    token = folder / "auth_token"
    token.write_text(TOKEN_FILE_TEXT)
    token.chmod(0o644)
    yield canary, token
    # Survivors (threads, daemons) would have touched it by now.
    assert canary.read_text() == CANARY_TEXT
    assert sorted(p.name for p in folder.iterdir()) == ["auth_token", "canary.txt"]
    shutil.rmtree(folder)


def load_program(path: Path, canary: Path, token: Path) -> str:
    return path.read_text().replace("CANARY_PATH", str(canary)).replace("TOKEN_PATH", str(token))


def test_suite_is_large_and_well_formed():
    assert len(PROGRAMS) >= 30
    for path in PROGRAMS:
        header = read_header(path)
        assert header["attempts"].strip()


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.stem)
def test_static_check_rejects(path: Path, outside):
    program = pytest.importorskip(
        "llmnas_dist.program.static", reason="check_static not available yet"
    )
    expected = read_header(path)["expect-static"].strip()
    if expected == "-":
        pytest.skip("not statically visible: only the sandbox can stop it")
    with pytest.raises(CandidateRejected) as info:
        program.check_static(load_program(path, *outside), AdmissionConfig())
    assert info.value.error_class.value in expected.split(",")


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.stem)
def test_sandbox_contains(path: Path, outside, monkeypatch: pytest.MonkeyPatch):
    canary, token = outside
    monkeypatch.setenv("LLMNAS_ARCHIVE_URL", SECRET_URL)
    monkeypatch.setenv("RAY_AUTH_TOKEN", SECRET_TOKEN)
    monkeypatch.setenv("PGPASSWORD", SECRET_TOKEN)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)}
    cwd, pid = os.getcwd(), os.getpid()
    expected = read_header(path)["expect-runtime"].strip().split(",")
    payload = {"in_shape": IN_SHAPE, "num_classes": NUM_CLASSES, "prm": {"lr": 0.01}}

    began = time.monotonic()
    outcome = run_in_sandbox(load_program(path, canary, token), "build", payload, LIMITS)
    wall = time.monotonic() - began
    try:
        build_verdict(outcome, NUM_CLASSES, AdmissionConfig().max_params)
        verdict = "ok"
    except CandidateRejected as exc:
        verdict = exc.error_class.value

    assert verdict in expected, outcome
    # Bounded time: the program's part within its limit, the whole within a startup margin.
    assert outcome["duration_s"] <= LIMITS.timeout_s + 2.0
    assert wall <= LIMITS.timeout_s + STARTUP_MARGIN_S
    # Bounded, secret-free text.
    assert len(outcome.get("message", "")) <= 2000
    assert len(outcome["stdout_tail"]) <= LIMITS.max_output_bytes
    visible = repr(outcome)
    for secret in (SECRET_URL, "secret-canary-url", SECRET_TOKEN, TOKEN_FILE_TEXT):
        assert secret not in visible
    # Nothing outside the sandbox touched; the parent unchanged and responsive.
    assert canary.read_text() == CANARY_TEXT
    assert token.read_text() == TOKEN_FILE_TEXT
    assert (os.getcwd(), os.getpid()) == (cwd, pid)
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert sum(i * i for i in range(10_000)) == 333283335000


# ---------------------------------------------------------------- device files

PROBE_OPEN = """
for path in PATHS:
    try:
        open(path, "r+b").close()
        print("OPENED", path)
    except OSError as exc:
        print("REFUSED", path, type(exc).__name__)
"""


@pytest.fixture()
def stand_in_dev():
    """World-writable regular files standing in for GPU device files (this machine has no
    GPU): Landlock treats them exactly like /dev/nvidia*, by path."""
    folder = Path(tempfile.mkdtemp(prefix="llmnas-dev-"))
    folder.chmod(0o755)
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (folder / name).write_text("")
        (folder / name).chmod(0o666)
    yield folder
    shutil.rmtree(folder)


def _probe(paths: list[str], **kwargs) -> str:
    code = f"PATHS = {paths!r}\n" + PROBE_OPEN
    payload = {"in_shape": IN_SHAPE, "num_classes": NUM_CLASSES, "prm": {}}
    return run_in_sandbox(code, "build", payload, LIMITS, **kwargs)["stdout_tail"]


def test_cpu_run_opens_no_device_file_beyond_null_zero_urandom(stand_in_dev: Path):
    if not sandbox.sandbox_capabilities().filesystem_confined:
        pytest.skip("no Landlock here")
    # /dev/full is a world-writable character device like /dev/nvidiactl; the nvidia paths
    # are refused as well where this machine has them.
    devices = ["/dev/full", "/dev/random", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"]
    refused = [p for p in devices if os.path.exists(p)] + [
        str(stand_in_dev / n) for n in ("nvidia0", "nvidiactl")
    ]
    tail = _probe(["/dev/null", *refused])
    assert "OPENED /dev/null" in tail, tail
    for path in refused:
        assert f"REFUSED {path} PermissionError" in tail, tail


def test_gpu_run_opens_its_gpu_but_not_another(stand_in_dev: Path, outside, monkeypatch):
    if not sandbox.sandbox_capabilities().filesystem_confined:
        pytest.skip("no Landlock here")
    canary, token = outside
    dev = str(stand_in_dev)
    gpus = [
        NvidiaGpu("0000:18:00.0", 0, "GPU-aaaa"),
        NvidiaGpu("0000:3a:00.0", 1, "GPU-bbbb"),
    ]
    present = [f"{dev}/nvidia0", f"{dev}/nvidia1"]
    real_grant = gpu_grant
    monkeypatch.setattr(
        sandbox,
        "gpu_grant",
        lambda ids: real_grant(ids, {}, gpus=gpus, present=present, dev_dir=dev),
    )
    monkeypatch.setenv("LLMNAS_ARCHIVE_URL", SECRET_URL)
    own = [f"{dev}/nvidia1", f"{dev}/nvidiactl", f"{dev}/nvidia-uvm", "/dev/null"]
    refused = [f"{dev}/nvidia0", "/dev/full", str(canary), str(token), "/proc/1/environ"]
    tail = _probe([*own, *refused], gpu_ids=["1"])
    for path in own:
        assert f"OPENED {path}" in tail, tail
    for path in refused:
        assert f"REFUSED {path} PermissionError" in tail, tail
    assert canary.read_text() == CANARY_TEXT and SECRET_URL not in tail
