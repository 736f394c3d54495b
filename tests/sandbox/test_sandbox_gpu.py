"""The sandbox's GPU grant (pure rules, checked here without a GPU), the preload list drawn
from the static allowlist, and `gpu`-marked training on CUDA through the sandbox."""

from __future__ import annotations

import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace

import pytest
import torch
from fixtures import LINEAR_NET

from llmnas_dist.config import EvaluationConfig
from llmnas_dist.evaluation.datasets import dataset_file
from llmnas_dist.evaluation.evaluate import evaluate_program, gpu_ids_for_device
from llmnas_dist.evaluation.recipe import Recipe
from llmnas_dist.program.policy import ALLOWED_IMPORTS
from llmnas_dist.sandbox import launch, runner
from llmnas_dist.sandbox.child import confine, tasks
from llmnas_dist.sandbox.gpus import (
    NvidiaGpu,
    check_gpu_ids,
    gpu_grant,
    parse_nvidia_information,
    present_gpu_device_files,
)
from llmnas_dist.sandbox.launch import confinement
from llmnas_dist.sandbox.runner import SandboxLimits, run_in_sandbox, sandbox_capabilities
from llmnas_dist.seeds import load_seeds

SCRUBBED_KEYS = {"PATH", "HOME", "TMPDIR", "LANG", *launch.THREAD_ENV_VARS}
SHARED = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-caps"]
# Four GPUs as a driver lists them: minors in probe order, not in PCI bus order.
GPUS = [
    NvidiaGpu("0000:b8:00.0", 0, "GPU-aaaa1111-0000-0000-0000-000000000000"),
    NvidiaGpu("0000:18:00.0", 1, "GPU-bbbb2222-0000-0000-0000-000000000000"),
    NvidiaGpu("0000:3a:00.0", 2, "GPU-cccc3333-0000-0000-0000-000000000000"),
    NvidiaGpu("0000:9a:00.0", 3, "GPU-dddd4444-0000-0000-0000-000000000000"),
]
ALL_FILES = [f"/dev/nvidia{n}" for n in range(4)]
PARENT_ENV = {
    "LLMNAS_ARCHIVE_URL": "postgresql://secret@db/archive",
    "RAY_ADDRESS": "10.0.0.1:6379",
    "CUDA_VISIBLE_DEVICES": "0,1,2,3",  # the parent's own view: never passed on as is
    "PATH": "/opt/secret/bin:/usr/bin",
}
LIMITS = SandboxLimits(timeout_s=120.0, memory_mb=4096, cpu_time_s=121.0, threads=1)


def grant(ids: list[str], env: dict | None = None, present: list[str] = ALL_FILES):
    return gpu_grant(ids, PARENT_ENV if env is None else env, gpus=GPUS, present=present)


# ---------------------------------------------------------------- the CPU case: unchanged


def test_cpu_run_gets_todays_paths_and_environment() -> None:
    read_paths, device_paths = confinement(["/data/digits"], None)
    assert read_paths == launch.read_paths(["/data/digits"])
    assert device_paths == ["/dev/null", "/dev/zero", "/dev/urandom"]
    assert not [p for p in read_paths if p.startswith(("/proc", "/sys", "/dev"))]
    env = launch.child_env("/tmp/w", 2)
    assert set(env) == SCRUBBED_KEYS and env["HOME"] == "/tmp/w" and env["OMP_NUM_THREADS"] == "2"


@pytest.mark.parametrize(
    ("abi", "workdir_rights", "device_rights"),
    [(1, 0x1FFE, 0x6), (3, 0x7FFE, 0x4006), (5, 0xFFFE, 0xC006), (7, 0xFFFE, 0xC006)],
)
def test_landlock_rules_of_a_cpu_run_are_pinned(abi, workdir_rights, device_rights) -> None:
    # Literal rights: workdir everything but execute, read paths read file/dir, devices
    # read/write (+truncate, +ioctl as the ABI has them), exactly as before GPU runs existed.
    rules = confine.landlock_rules(abi, "/w", ["/usr", "/lib"], confine.BASE_DEVICE_FILES)
    assert rules == [
        ("/w", workdir_rights),
        ("/usr", 0xC),
        ("/lib", 0xC),
        ("/dev/null", device_rights),
        ("/dev/zero", device_rights),
        ("/dev/urandom", device_rights),
    ]


# ---------------------------------------------------------------- the GPU grant


def test_gpu_grant_has_exactly_the_assigned_device_and_variables() -> None:
    g = grant(["2"])  # index 2 in PCI bus order: 0000:9a:00.0, minor 3
    assert g.device_files == (*SHARED, "/dev/nvidia3")
    assert g.env == {"CUDA_VISIBLE_DEVICES": "2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    env = launch.child_env("/tmp/w", 1, g)
    assert set(env) == SCRUBBED_KEYS | {"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"}
    assert env["PATH"] == "/usr/bin:/bin"  # nothing else of the parent's
    read_paths, device_paths = confinement([], g)
    assert device_paths == ["/dev/null", "/dev/zero", "/dev/urandom", *SHARED, "/dev/nvidia3"]
    assert set(launch.read_paths([])) < set(read_paths)
    assert {"/proc/driver/nvidia", "/sys/bus/pci"} <= set(read_paths)
    assert "/proc" not in read_paths and "/dev" not in read_paths


def test_two_gpus_and_uuids_resolve_to_their_own_files() -> None:
    assert grant(["0", "3"]).device_files == (*SHARED, "/dev/nvidia0", "/dev/nvidia1")
    assert grant(["GPU-cccc3333"]).device_files == (*SHARED, "/dev/nvidia2")
    assert grant(["GPU-cccc3333"]).env["CUDA_VISIBLE_DEVICES"] == "GPU-cccc3333"


def test_container_numbering_counts_only_present_gpus() -> None:
    # A container that was given the GPU with minor 3 only: CUDA calls it 0.
    assert grant(["0"], present=["/dev/nvidia3"]).device_files == (*SHARED, "/dev/nvidia3")


@pytest.mark.parametrize(
    ("ids", "env"),
    [
        (["MIG-4b7c8f2e-0000-0000-0000-000000000000"], None),  # parent GPU unknown
        (["GPU-ffff"], None),  # no such UUID
        (["7"], None),  # index beyond the listing
        (["1"], {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}),  # index order unknown to us
    ],
)
def test_unresolvable_ids_fall_back_to_all_gpu_files(ids, env) -> None:
    g = grant(ids, env)
    assert g.device_files == (*SHARED, *ALL_FILES)
    assert g.env["CUDA_VISIBLE_DEVICES"] == ids[0]


def test_library_path_keeps_only_absolute_folders() -> None:
    g = grant(["0"], {"LD_LIBRARY_PATH": ":.:lib:/usr/local/nvidia/lib64:/opt/x:/opt/x"})
    assert g.env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64:/opt/x"
    assert g.read_paths[-2:] == ("/usr/local/nvidia/lib64", "/opt/x")
    assert "LD_LIBRARY_PATH" not in grant(["0"]).env


def test_driver_information_is_parsed() -> None:
    text = (
        "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 17\n"
        "GPU UUID: \t GPU-5b1c1a9e-1111-2222-3333-444455556666\nBus Type: \t PCIe\n"
        "Bus Location: \t 0000:18:00.0\nDevice Minor: \t 5\nGPU Excluded:\t No\n"
    )
    gpu = parse_nvidia_information("0000:18:00.0", text)
    assert gpu == NvidiaGpu("0000:18:00.0", 5, "GPU-5b1c1a9e-1111-2222-3333-444455556666")
    assert parse_nvidia_information("0000:18:00.0", "Model: x\n") is None


@pytest.mark.parametrize("bad", ["0", [True], ["0,1"], ["0", "0"], [""], [None], ["a b"]])
def test_bad_gpu_ids_raise_value_error(bad) -> None:
    with pytest.raises(ValueError, match="gpu_ids"):
        check_gpu_ids(bad)


def test_a_device_name_maps_to_this_process_visible_gpu() -> None:
    assert gpu_ids_for_device("cuda", {}) == ["0"]
    assert gpu_ids_for_device("cuda:1", {"CUDA_VISIBLE_DEVICES": "4, 6"}) == ["6"]
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        gpu_ids_for_device("cuda:2", {"CUDA_VISIBLE_DEVICES": "4,6"})


# ---------------------------------------------------------------- a GPU run's own /proc

# What a program in a GPU run tries with what the grant allows beyond a CPU run: writes
# beneath its own threads' /proc entries (CUDA needs them) and a /proc of its own PID
# namespace.
PROC_PROBE = """
import os
print('PID', os.getpid(), 'SELF', os.readlink('/proc/self'))
try:
    print('PROCS', sorted(p for p in os.listdir('/proc') if p.isdigit()))
except OSError as e:
    print('PROCS', type(e).__name__)
def attempt(label, path, text):
    try:
        with open(path, 'w') as fh:
            fh.write(text)
        print('WROTE', label)
    except OSError as e:
        print('REFUSED', label, type(e).__name__)
attempt('thread_name', '/proc/thread-self/comm', 'renamed')
attempt('comm', '/proc/self/comm', 'renamed')
attempt('oom_lower', '/proc/self/oom_score_adj', '-1000')
fd = os.open(DATA, os.O_RDONLY)
attempt('fd_reopen', '/proc/self/fd/%d' % fd, 'pwned')
attempt('root_link', '/proc/self/root' + DATA, 'pwned')
attempt('parent', '/proc/%d/comm' % os.getppid(), 'pwned')
"""
HOSTILE_WRITES = ("comm", "oom_lower", "fd_reopen", "root_link", "parent")


@pytest.fixture
def readable_data():
    """A file anyone may write by its mode (so only the confinement refuses), in a folder
    of its own under the temp root that nobody may enter (pytest's folders are their
    owner's only, and their parents are not ours to open up)."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="llmnas-proc-probe-"))
    folder.chmod(0o755)
    data = folder / "readable.txt"
    data.write_text("untouched")
    data.chmod(0o666)
    yield data
    shutil.rmtree(folder, ignore_errors=True)


def _proc_probe(data: pathlib.Path, gpu_ids: list[str]) -> str:
    code = f"DATA = {str(data)!r}\n" + PROC_PROBE
    payload = {"in_shape": [2, 1, 8, 8], "num_classes": 10, "prm": {}}
    out = run_in_sandbox(
        code, "build", payload, LIMITS, extra_read_paths=[str(data.parent)], gpu_ids=gpu_ids
    )
    return out["stdout_tail"]


def _refused(tail: str, label: str) -> bool:
    # the parent's entry: refused, or absent from a /proc that lists only the sandbox
    return f"REFUSED {label} PermissionError" in tail or (
        label == "parent" and "REFUSED parent FileNotFoundError" in tail
    )


def test_gpu_run_without_a_gpu_writes_nothing_it_should_not(readable_data) -> None:
    # gpu_ids on a machine without a GPU: the GPU run's confinement, CUDA absent. Its
    # threads' names are writable (what CUDA needs), nothing else; Landlock alone is tested
    # below (here the uid, nobody and non-dumpable, refuses most entries too).
    caps = sandbox_capabilities()
    if not caps.landlock_abi:
        pytest.skip("no Landlock here: the uid alone confines writes")
    tail = _proc_probe(readable_data, ["0"])
    assert all(_refused(tail, label) for label in HOSTILE_WRITES), tail
    assert readable_data.read_text() == "untouched"
    assert "WROTE thread_name" in tail, tail
    if caps.own_proc:
        # its own PID namespace's /proc: the worker is PID 1 there, /proc/self agrees
        assert "PID 1 SELF 1\n" in tail and "REFUSED parent FileNotFoundError" in tail, tail
    with open("/proc/self/stat") as fh:  # the host's /proc is untouched by the child's mount
        assert fh.read().split()[0] == str(os.getpid())


def test_landlock_write_grant_reaches_only_the_processs_own_entry(tmp_path, readable_data) -> None:
    # Landlock alone (as root, no uid drop, no namespaces), with a GPU run's rules: its
    # threads' names are writable, not its other entries, nothing reached through its magic
    # links, no other process's entry.
    if os.geteuid() != 0 or not confine.landlock_abi():
        pytest.skip("needs root (so that only Landlock refuses) and Landlock")
    data = readable_data
    work = tmp_path / "work"
    work.mkdir()
    g = gpu_grant(["0"], {}, gpus=[], present=[])
    read_paths, device_paths = confinement([str(data.parent)], g)
    script = (
        "import os, sys\n"
        "from llmnas_dist.sandbox.child import confine\n"
        f"confine.apply_landlock(confine.landlock_abi(), {str(work)!r}, {read_paths!r}, "
        f"{device_paths!r}, {list(g.write_paths)!r})\n"
        f"DATA = {str(data)!r}\n" + PROC_PROBE
    )
    tail = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "WROTE thread_name" in tail, tail  # the grant CUDA needs
    assert all(f"REFUSED {label} PermissionError" in tail for label in HOSTILE_WRITES), tail
    assert data.read_text() == "untouched"


def test_cpu_run_writes_nothing_beneath_proc(readable_data) -> None:
    if not sandbox_capabilities().landlock_abi:
        pytest.skip("no Landlock here")
    tail = _proc_probe(readable_data, [])
    assert "REFUSED comm PermissionError" in tail and "WROTE" not in tail, tail
    assert "PROCS PermissionError" in tail and readable_data.read_text() == "untouched"


def test_gpu_run_without_its_own_proc_still_runs_and_warns_once(monkeypatch, caplog) -> None:
    # A container that cannot mount procfs: the GPU run keeps the inherited /proc (CUDA will
    # not start there, so the user is told), and everything else of its confinement.
    caps = sandbox_capabilities()
    if caps.namespaces == "none":
        pytest.skip("no namespaces here: /proc is the host's anyway")
    monkeypatch.setattr(runner, "sandbox_capabilities", lambda: replace(caps, own_proc=False))
    runner._warn_gpu_without_own_proc.cache_clear()
    code = "import os\nprint('PID', os.getpid())\n"
    payload = {"in_shape": [2, 1, 8, 8], "num_classes": 10, "prm": {}}
    with caplog.at_level(logging.WARNING, logger="llmnas_dist.sandbox.runner"):
        tails = [run_in_sandbox(code, "build", payload, LIMITS, gpu_ids=["0"]) for _ in range(2)]
    assert all("PID 1\n" in out["stdout_tail"] for out in tails), tails
    warned = [r for r in caplog.records if "a /proc of our own" in r.getMessage()]
    assert len(warned) == 1
    run_in_sandbox(code, "build", payload, LIMITS)  # a CPU run never warns about it
    assert len([r for r in caplog.records if "a /proc of our own" in r.getMessage()]) == 1


def test_own_proc_is_probed_where_the_kernel_allows_it() -> None:
    flags = ["--net", "--pid", "--fork", "--mount-proc"]
    if os.geteuid() != 0:
        flags = ["--user", *flags]
    if shutil.which("unshare") is None:
        pytest.skip("no unshare tool to compare with")
    allowed = subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0
    assert sandbox_capabilities().own_proc == allowed


# ---------------------------------------------------------------- one list of modules


def test_preload_list_is_the_static_allowlist() -> None:
    assert set(tasks.preload_modules()) == ALLOWED_IMPORTS | set(tasks.SANDBOX_MODULES)
    assert not hasattr(tasks, "PRELOAD_MODULES")  # no second, hand-kept copy


def test_every_allowlisted_module_is_loaded_before_the_program_runs() -> None:
    # A module imported only after the uid drop and Landlock could not be read any more.
    code = (
        "import sys\n"
        f"print('MISSING', sorted(set({sorted(ALLOWED_IMPORTS)!r}) - set(sys.modules)))\n"
    )
    payload = {"in_shape": [2, 1, 8, 8], "num_classes": 10, "prm": {}}
    out = run_in_sandbox(code, "build", payload, SandboxLimits(timeout_s=10.0, memory_mb=1536))
    assert "MISSING []" in out["stdout_tail"], out["stdout_tail"]


# ---------------------------------------------------------------- on a GPU

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def _train_payload(device: str) -> tuple[dict, str]:
    path = dataset_file("digits", 0)
    recipe = Recipe(epochs=0.5, device=device).to_payload()
    return {"recipe": recipe, "data_path": str(path), "num_classes": 10, "prm": {}}, str(
        path.parent
    )


@pytest.mark.gpu
@needs_cuda
def test_seed_program_trains_on_cuda_through_the_sandbox() -> None:
    payload, data_dir = _train_payload("cuda:0")
    code = load_seeds()["plain_cnn"]
    ids = gpu_ids_for_device("cuda", os.environ)
    out = run_in_sandbox(code, "train", payload, LIMITS, extra_read_paths=[data_dir], gpu_ids=ids)
    assert out["ok"], out  # the output tail says why CUDA did not start, if it did not
    assert out["result"]["device"] == "cuda:0", out["stdout_tail"]
    assert out["result"]["accuracy"] > 0.1


@pytest.mark.gpu
@needs_cuda
def test_evaluator_trains_on_its_gpu() -> None:
    from workers.evaluator import EvalTask, Evaluator

    ids = gpu_ids_for_device("cuda", os.environ)
    evaluator = Evaluator(EvaluationConfig(timeout_s=120.0), gpu_ids=ids)
    code = load_seeds()["plain_cnn"]
    result = evaluator.evaluate(EvalTask(key="k", code=code, dataset="digits", epochs=0.5))
    assert result.ok, result.message
    assert (result.device or "").startswith("cuda") and result.gpu_id == ids[0]


@pytest.mark.gpu
@needs_cuda
def test_gpu_run_opens_only_its_own_gpu_and_the_shared_files() -> None:
    ids = gpu_ids_for_device("cuda", os.environ)
    granted = gpu_grant(ids).device_files
    own = [p for p in granted if re.fullmatch(r"/dev/nvidia\d+", p)]
    others = [p for p in present_gpu_device_files() if p not in own]
    refused = [*others, "/dev/full", "/proc/1/environ"]
    code = (
        "for p in %r:\n"
        "    try:\n        open(p, 'rb').close()\n        print('OPENED', p)\n"
        "    except OSError as e:\n        print('REFUSED', p, type(e).__name__)\n"
        % [*own, "/dev/nvidiactl", *refused]
    )
    payload = {"in_shape": [2, 1, 8, 8], "num_classes": 10, "prm": {}}
    out = run_in_sandbox(code, "build", payload, LIMITS, gpu_ids=ids)
    tail = out["stdout_tail"]
    assert own and all(f"OPENED {p}" in tail for p in [*own, "/dev/nvidiactl"]), tail
    for path in refused:
        assert f"REFUSED {path} PermissionError" in tail, tail


@pytest.mark.gpu
@needs_cuda
def test_host_memory_bomb_on_a_gpu_run_is_out_of_memory() -> None:
    code = LINEAR_NET.replace(
        "return self.fc(torch.flatten(x, 1))",
        "self.keep = [torch.ones(1 << 28) for _ in range(40)]\n        return self.fc(x)",
    )
    limits = SandboxLimits(timeout_s=60.0, memory_mb=2048, cpu_time_s=61.0)
    result = evaluate_program(code, "digits", Recipe(device="cuda"), limits)
    assert (result.ok, result.error_class) == (False, "out_of_memory"), result.message
