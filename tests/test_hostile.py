"""The hostile-program suite: every program in tests/hostile/ against both barriers.

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

from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected
from llmnas_dist.sandbox import SandboxLimits, build_verdict, run_in_sandbox

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
    program = pytest.importorskip("llmnas_dist.program", reason="check_static not available yet")
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
