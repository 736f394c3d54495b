"""deploy/: every file parses and has the structure its consumer needs.

Checked against the tools' own rules where they ship them (Ray's cluster-launcher JSON
schema and config validation, Ray's RuntimeEnv), and across files: one image, one Ray
version, secretKeyRefs that resolve, GPU limits that match the custom resources, an
entrypoint config that exists and loads. Each cross-file check is a function returning the
problems it finds, and is also run on a broken copy to show that it can fail.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from fixtures import ROOT
from pathspec import PathSpec
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

from llmnas_dist.config import ARCHIVE_URL_ENV, Config, load_config

REPO = ROOT
DEPLOY = REPO / "deploy"
KUBERAY = DEPLOY / "kuberay"
CUSTOM_RESOURCES = ("llmnas_evaluator", "llmnas_inference")
GPU = "nvidia.com/gpu"
ENTRYPOINT_CONFIG = "deploy/configs/gpu-cluster.yaml"
API_VERSIONS = {
    "RayCluster": "ray.io/v1",
    "RayJob": "ray.io/v1",
    "Secret": "v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "StatefulSet": "apps/v1",
}
# Passwords that may appear in a database URL under deploy/: placeholders only.
PLACEHOLDER_PASSWORDS = {"REPLACE_ME", "PASSWORD", "$PGPASS"}
# Ray matches working_dir excludes with pathspec's "gitwildmatch" (deprecated by pathspec);
# the tests use the same rules on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")


# ---------------------------------------------------------------- reading the files


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a (possibly multi-document) YAML file."""
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def deploy_yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def kuberay_docs() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERAY.glob("*.yaml")) for doc in load_docs(path)]


def find(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = find(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            pairs.append((instruction.upper(), " ".join(args.split())))
    return pairs


def dockerfile_args() -> dict[str, str]:
    return dict(a.partition("=")[::2] for i, a in dockerfile_instructions() if i == "ARG")


def dockerfile_workdir() -> str:
    return [a for i, a in dockerfile_instructions() if i == "WORKDIR"][-1]


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY, flags such as --chown dropped."""
    copies = []
    for instruction, args in dockerfile_instructions():
        if instruction == "COPY":
            paths = [t for t in args.split() if not t.startswith("--")]
            copies.append((paths[:-1], paths[-1]))
    return copies


def walk(node: Any) -> Iterator[Any]:
    """Every mapping and list nested anywhere in a parsed YAML document."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from walk(child)


# ---------------------------------------------------------------- Ray cluster specs


def ray_cluster_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The RayCluster specs: each RayCluster's, and each RayJob's rayClusterSpec."""
    specs = [d["spec"] for d in find(docs, "RayCluster")]
    return specs + [d["spec"]["rayClusterSpec"] for d in find(docs, "RayJob")]


def pod_specs(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    groups = [("head", spec["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    return [(name, g["template"]["spec"]) for name, g in groups]


def ray_containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for spec in ray_cluster_specs(docs)
        for _, pod in pod_specs(spec)
        for c in pod["containers"]
    ]


def start_param_resources(group: dict[str, Any]) -> dict[str, float]:
    """rayStartParams.resources: KubeRay's JSON string wrapped in escaped quotes."""
    raw = group.get("rayStartParams", {}).get("resources")
    if raw is None:
        return {}
    inner = json.loads(raw) if raw.startswith('"') else raw
    parsed = json.loads(inner)
    assert isinstance(parsed, dict), f"resources of {group.get('groupName')} is not a mapping"
    return parsed


def gpu_problems(spec: dict[str, Any]) -> list[str]:
    """GPU groups must have GPU limits equal to their per-GPU custom resource; head none."""
    problems = []
    head = spec["headGroupSpec"]
    for c in head["template"]["spec"]["containers"]:
        if GPU in c.get("resources", {}).get("limits", {}):
            problems.append("head container asks for GPUs")
    if set(start_param_resources(head)) & set(CUSTOM_RESOURCES):
        problems.append("head advertises an llmnas_* resource")
    seen = set()
    for group in spec.get("workerGroupSpecs", []):
        custom = {k: v for k, v in start_param_resources(group).items() if k in CUSTOM_RESOURCES}
        limits = [
            c.get("resources", {}).get("limits", {})
            for c in group["template"]["spec"]["containers"]
        ]
        gpus = sum(int(lim.get(GPU, 0)) for lim in limits)
        if not custom:
            problems.append(f"group {group['groupName']} advertises no llmnas_* resource")
        for name, amount in custom.items():
            seen.add(name)
            if gpus < 1 or amount != gpus:
                problems.append(f"group {group['groupName']}: {name}={amount} but {gpus} GPU(s)")
    problems += [f"no worker group advertises {r}" for r in CUSTOM_RESOURCES if r not in seen]
    return problems


# ---------------------------------------------------------------- cross-manifest checks


def secret_ref_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every secretKeyRef names a Secret defined in the manifests, and a key it holds."""
    secrets = {
        s["metadata"]["name"]: {**s.get("data", {}), **s.get("stringData", {})}
        for s in find(docs, "Secret")
    }
    problems = []
    for node in (n for d in docs for n in walk(d)):
        if isinstance(node, dict) and "secretKeyRef" in node:
            ref = node["secretKeyRef"]
            if ref["name"] not in secrets:
                problems.append(f"secretKeyRef names undefined Secret {ref['name']!r}")
            elif ref["key"] not in secrets[ref["name"]]:
                problems.append(f"Secret {ref['name']!r} has no key {ref['key']!r}")
    return problems


def claim_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every persistentVolumeClaim a pod mounts is defined in the manifests."""
    claims = {p["metadata"]["name"] for p in find(docs, "PersistentVolumeClaim")}
    problems = []
    for node in (n for d in docs for n in walk(d)):
        if isinstance(node, dict) and "persistentVolumeClaim" in node:
            name = node["persistentVolumeClaim"]["claimName"]
            if name not in claims:
                problems.append(f"volume claims undefined PVC {name!r}")
    return problems


def image_problems(docs: list[dict[str, Any]]) -> list[str]:
    images = {c["image"] for c in ray_containers(docs)}
    return [] if len(images) == 1 else [f"Ray containers use {len(images)} images: {images}"]


def archive_env(container: dict[str, Any]) -> dict[str, Any] | None:
    return next((e for e in container.get("env", []) if e["name"] == ARCHIVE_URL_ENV), None)


def container_mounts(pod: dict[str, Any], container: dict[str, Any]) -> set[str]:
    """Mount paths of PVC-backed volumes in one container."""
    pvcs = {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
    return {m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in pvcs}


def under_any(path: str, mounts: set[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


# ---------------------------------------------------------------- every file


def test_every_yaml_under_deploy_parses():
    files = deploy_yaml_files()
    names = {p.relative_to(DEPLOY).as_posix() for p in files}
    assert {
        "cluster.yaml",
        "runtime_env.yaml",
        "configs/gpu-cluster.yaml",
        "configs/cpu-cluster.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
        "kuberay/postgres.yaml",
        "kuberay/secret.yaml",
        "kuberay/storage.yaml",
    } <= names
    for path in files:
        docs = load_docs(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), f"{path}: a document is not a mapping"


@pytest.mark.parametrize("path", sorted((DEPLOY / "configs").glob("*.y*ml")), ids=lambda p: p.name)
def test_every_deploy_config_loads(path: Path):
    cfg = load_config(path, environ={})
    assert isinstance(cfg, Config)
    url = "postgresql+psycopg://u@db:5432/llmnas"
    assert load_config(path, environ={ARCHIVE_URL_ENV: url}).archive.url == url


def test_no_secrets_or_account_ids_under_deploy():
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".pyc"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?<!\d)\d{12}(?!\d)", text), f"{path}: looks like an account id"
        assert "arn:aws" not in text, f"{path}: names an AWS ARN"
        assert "PRIVATE KEY" not in text, f"{path}: holds a key"
        for password in re.findall(r"://[^:@/\s]+:([^@\s]+)@", text):
            assert password in PLACEHOLDER_PASSWORDS, f"{path}: URL with a real-looking password"


# ---------------------------------------------------------------- cluster launcher


def cluster_yaml() -> dict[str, Any]:
    return load_docs(DEPLOY / "cluster.yaml")[0]


def ray_schema() -> dict[str, Any]:
    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text(encoding="utf-8"))


def test_cluster_yaml_validates_against_rays_schema():
    raw = cluster_yaml()
    jsonschema.validate(raw, ray_schema())
    # What `ray up` does before it talks to the cloud: merge defaults, then validate.
    validate_config(prepare_config(copy.deepcopy(raw)))


def test_rays_schema_rejects_a_broken_cluster_yaml():
    broken = cluster_yaml()
    broken["available_node_types"]["evaluator"]["resources"]["llmnas_evaluator"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, ray_schema())
    typo = {**cluster_yaml(), "setup_comands": []}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, ray_schema())


def test_cluster_yaml_node_types_and_custom_resources():
    cfg = cluster_yaml()
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]["resources"]
    assert not head.get("GPU") and not set(head) & set(CUSTOM_RESOURCES)
    for name in CUSTOM_RESOURCES:
        holders = [t for t in types.values() if name in t["resources"]]
        assert len(holders) == 1, f"one node type must advertise {name}"
        res = holders[0]["resources"]
        assert res.get("GPU", 0) >= 1 and res[name] == res["GPU"], f"{name} is per GPU"


def test_cluster_yaml_installs_the_project_and_starts_ray_with_token_auth():
    cfg = cluster_yaml()
    assert any("[postgres]" in c and "pip install" in c for c in cfg["setup_commands"])
    inference = next(
        t for t in cfg["available_node_types"].values() if "llmnas_inference" in t["resources"]
    )
    assert any("vllm" in c and "pip install" in c for c in inference["worker_setup_commands"])
    for cmds in (cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]):
        assert any("RAY_AUTH_MODE=token ray start" in c for c in cmds)
    assert "~/.ray/auth_token" in cfg["file_mounts"]
    assert any(ARCHIVE_URL_ENV in c for c in cfg["head_start_ray_commands"])


def test_cluster_yaml_images_match_the_dockerfiles_ray_and_python():
    docker = cluster_yaml()["docker"]
    ray_version = dockerfile_args()["RAY_VERSION"]
    base = [a for i, a in dockerfile_instructions() if i == "FROM"][0]
    match = re.search(r"python:(\d+)\.(\d+)", base)
    assert match is not None, f"base image {base} names no Python version"
    py = f"py{match[1]}{match[2]}"
    for key in ("image", "head_image"):
        assert docker[key].startswith(f"rayproject/ray:{ray_version}-{py}"), key


def test_cluster_yaml_mounts_the_run_dir_and_data_root():
    cfg = load_config(DEPLOY / "configs/gpu-cluster.yaml", environ={})
    options = " ".join(cluster_yaml()["docker"]["run_options"])
    mounts = {m.split(":")[1] for m in re.findall(r"-v (\S+)", options)}
    assert under_any(cfg.cluster.run_dir, mounts)
    assert cfg.evaluation.data_root and under_any(cfg.evaluation.data_root, mounts)


# ---------------------------------------------------------------- KubeRay manifests


def test_kuberay_kinds_and_api_versions():
    docs = kuberay_docs()
    kinds = [d["kind"] for d in docs]
    assert sorted(set(kinds)) == sorted(API_VERSIONS)
    for d in docs:
        assert d["apiVersion"] == API_VERSIONS[d["kind"]], d["kind"]
        assert d["metadata"]["name"]


def test_rayjob_entrypoint_names_a_config_that_loads():
    job = one(kuberay_docs(), "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["llmnas", "run"]
    config = argv[argv.index("--config") + 1]
    assert config == ENTRYPOINT_CONFIG
    assert isinstance(load_config(REPO / config, environ={}), Config)
    # The image holds that file at the same path under WORKDIR, where the job starts.
    assert any(
        Path(config).is_relative_to(src) and Path(dest) == Path(src)
        for sources, dest in dockerfile_copies()
        for src in sources
    ), f"the Dockerfile does not copy {config}"


def test_rayjob_runtime_env_is_valid_and_matches_runtime_env_yaml():
    job = one(kuberay_docs(), "RayJob")
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert set(env) <= RuntimeEnv.known_fields
    assert env["working_dir"] == dockerfile_workdir()
    # working_dir exists only inside the image; validate the rest here.
    RuntimeEnv(**{k: v for k, v in env.items() if k != "working_dir"})
    assert env["env_vars"] == load_docs(DEPLOY / "runtime_env.yaml")[0]["env_vars"]


def test_rayjob_cluster_is_the_raycluster():
    docs = kuberay_docs()
    assert one(docs, "RayJob")["spec"]["rayClusterSpec"] == one(docs, "RayCluster")["spec"]


def test_ray_clusters_have_gpu_groups_token_auth_and_the_dockerfiles_ray():
    ray_version = dockerfile_args()["RAY_VERSION"]
    for spec in ray_cluster_specs(kuberay_docs()):
        assert gpu_problems(spec) == []
        assert spec["authOptions"]["mode"] == "token"
        assert spec["rayVersion"] == ray_version


def test_gpu_check_fails_without_gpu_limits():
    spec = copy.deepcopy(one(kuberay_docs(), "RayCluster")["spec"])
    for c in spec["workerGroupSpecs"][0]["template"]["spec"]["containers"]:
        del c["resources"]["limits"][GPU]
    assert gpu_problems(spec)


def test_one_image_everywhere():
    docs = kuberay_docs()
    assert image_problems(docs) == []
    broken = copy.deepcopy(docs)
    ray_containers(broken)[-1]["image"] = "rayproject/ray:latest"
    assert image_problems(broken)


def test_head_gets_the_archive_url_from_the_secret():
    docs = kuberay_docs()
    for spec in ray_cluster_specs(docs):
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        env = archive_env(head)
        assert env is not None and "secretKeyRef" in env["valueFrom"], "head lacks the URL"
    assert secret_ref_problems(docs) == []


def test_secret_check_fails_when_the_secret_or_key_is_missing():
    docs = kuberay_docs()
    assert secret_ref_problems([d for d in docs if d["kind"] != "Secret"])
    broken = copy.deepcopy(docs)
    one(broken, "Secret")["stringData"].pop("archive-url")
    assert secret_ref_problems(broken)


def test_secret_holds_placeholders_only():
    secret = one(kuberay_docs(), "Secret")
    assert "data" not in secret, "base64 data in a committed Secret hides what it holds"
    assert all("REPLACE_ME" in v for v in secret["stringData"].values())


def test_volumes_are_defined_and_hold_run_dir_and_data_root():
    docs = kuberay_docs()
    assert claim_problems(docs) == []
    assert claim_problems([d for d in docs if d["kind"] != "PersistentVolumeClaim"])
    cfg = load_config(REPO / ENTRYPOINT_CONFIG, environ={})
    for spec in ray_cluster_specs(docs):
        for name, pod in pod_specs(spec):
            for c in pod["containers"]:
                mounts = container_mounts(pod, c)
                assert under_any(cfg.cluster.run_dir, mounts), f"{name}: run_dir not shared"
                assert cfg.evaluation.data_root and under_any(cfg.evaluation.data_root, mounts)


def test_pods_run_as_non_root():
    for spec in ray_cluster_specs(kuberay_docs()):
        for name, pod in pod_specs(spec):
            ctx = pod["securityContext"]
            assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0, name


def test_postgres_service_statefulset_and_archive_url_agree():
    docs = kuberay_docs()
    service, sts = one(docs, "Service"), one(docs, "StatefulSet")
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    mounts = [
        m["name"] for c in sts["spec"]["template"]["spec"]["containers"] for m in c["volumeMounts"]
    ]
    assert claim in mounts
    port = service["spec"]["ports"][0]["port"]
    url = one(docs, "Secret")["stringData"]["archive-url"]
    assert f"@{service['metadata']['name']}:{port}/" in url
    assert url.startswith("postgresql+psycopg://")


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_base_install_and_user():
    steps = dockerfile_instructions()
    first_from = [i for i, _ in steps].index("FROM")
    assert all(i == "ARG" for i, _ in steps[:first_from]), "only ARG may precede FROM"
    base = [a for i, a in steps if i == "FROM"]
    assert len(base) == 1 and re.match(r"(python:3\.11|rayproject/ray)", base[0])
    args = dockerfile_args()
    assert "postgres" in args["EXTRAS"].split(",")
    installs = [a for i, a in steps if i == "RUN" and "pip install" in a]
    assert any('".[${EXTRAS}]"' in a for a in installs), "the project is not installed"
    users = [a for i, a in steps if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_copies_every_package_it_installs():
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    include = re.search(r"include = \[([^\]]*)\]", pyproject)
    assert include is not None
    packages = {p.strip().strip('"').rstrip("*") for p in include.group(1).split(",")}
    copied = {src for sources, _ in dockerfile_copies() for src in sources}
    assert {"pyproject.toml", "README.md"} | packages <= copied
    for src in copied:
        assert (REPO / src).exists(), f"COPY source {src} does not exist"


def test_dockerfile_has_no_secrets():
    for instruction, args in dockerfile_instructions():
        if instruction in ("ENV", "ARG"):
            assert not re.search(r"(PASSWORD|TOKEN|SECRET|ARCHIVE_URL)", args, re.I), args


# ---------------------------------------------------------------- runtime_env


def runtime_env() -> dict[str, Any]:
    return load_docs(DEPLOY / "runtime_env.yaml")[0]


def uploaded_files(root: Path, excludes: list[str]) -> list[str]:
    """Files Ray would upload as working_dir with these excludes (its gitwildmatch rules)."""
    spec = PathSpec.from_lines("gitwildmatch", excludes)
    kept = []
    for here, dirs, files in os.walk(root):
        rel = Path(here).relative_to(root)
        dirs[:] = [d for d in dirs if not spec.match_file((rel / d).as_posix())]
        kept += [(rel / f).as_posix() for f in files if not spec.match_file((rel / f).as_posix())]
    return kept


def test_runtime_env_is_valid(monkeypatch: pytest.MonkeyPatch):
    env = runtime_env()
    assert set(env) <= RuntimeEnv.known_fields, "unknown fields are silently taken as plugins"
    monkeypatch.chdir(REPO)  # working_dir "." is the repository root, as with `ray job submit`
    parsed = RuntimeEnv(**env)
    assert parsed["working_dir"] == "."
    assert ARCHIVE_URL_ENV not in parsed["env_vars"], "the dashboard shows runtime_env to all"
    assert "LLMNAS_CACHE" in parsed["env_vars"]


def test_runtime_env_rejects_bad_values():
    not_strings: Any = {"LLMNAS_CACHE": 1}
    with pytest.raises(TypeError):
        RuntimeEnv(env_vars=not_strings)


def test_runtime_env_excludes_environments_runs_and_caches():
    spec = PathSpec.from_lines("gitwildmatch", runtime_env()["excludes"])
    for path in (
        ".venv/bin/python",
        ".venv-vllm/lib/x.py",
        "runs/archive.db",
        "db/__pycache__/x.pyc",
        ".mypy_cache/x",
    ):
        assert spec.match_file(path), path
    for path in (ENTRYPOINT_CONFIG, "llmnas_dist/cli/main.py", "cluster/pool.py"):
        assert not spec.match_file(path), path


def test_runtime_env_upload_is_small_and_holds_the_code():
    files = uploaded_files(REPO, runtime_env()["excludes"])
    assert ENTRYPOINT_CONFIG in files and "llmnas_dist/config.py" in files
    assert not [f for f in files if f.startswith((".venv", "runs/", ".git/"))]
    size = sum((REPO / f).stat().st_size for f in files)
    assert size < 50 * 2**20, f"working_dir upload would be {size / 2**20:.0f} MiB"
