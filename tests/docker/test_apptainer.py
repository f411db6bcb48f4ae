"""docker/medssl.def, the Apptainer twin of docker/Dockerfile, agrees with it: the same base image,
stages, lock, user, installation, environment (evaluated by bash as Apptainer does), entrypoint,
health check and labels. Apptainer itself is not installed here, so the file is checked, not built."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.docker.dockerfile import ROOT, stages

DEF = ROOT / "docker" / "medssl.def"


def parse_def(text: str) -> list[dict]:
    """Stages of a definition file: ``{"header": {...}, "sections": {"%post": "...", ...}}``."""
    result: list[dict] = []
    section = None
    for line in text.splitlines():
        if line.startswith("#") and section is None:
            continue
        header = re.match(r"^(Bootstrap|From|Stage):\s*(.+)$", line)
        if header:
            if header.group(1) == "Bootstrap":
                result.append({"header": {}, "sections": {}})
                section = None
            result[-1]["header"][header.group(1)] = header.group(2).strip()
            continue
        m = re.match(r"^(%\w+)(.*)$", line)
        if m:
            section = (m.group(1) + m.group(2)).strip()
            result[-1]["sections"][section] = ""
            continue
        if section is not None:
            result[-1]["sections"][section] += line + "\n"
    return result


@pytest.fixture(scope="module")
def recipe():
    return parse_def(DEF.read_text())


def _arguments(recipe) -> dict[str, str]:
    out = {}
    for stage in recipe:
        for line in stage["sections"].get("%arguments", "").split():
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _render(text: str, args: dict) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: args[m.group(1)], text)


def _commands(script: str) -> list[str]:
    """Shell commands with continuation lines joined and whitespace normalised."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [" ".join(c.split()) for c in joined.splitlines() if c.strip() and not c.strip().startswith("#")]


def test_same_stages_and_base_image(recipe):
    docker = stages()
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", (ROOT / "docker" / "Dockerfile").read_text()).group(1)
    assert [s["header"].get("Stage") for s in recipe] == [s.name for s in docker] == ["wheels", "runtime"]
    assert all(s["header"] == {"Bootstrap": "docker", "From": base, "Stage": s["header"]["Stage"]} for s in recipe)
    assert _arguments(recipe)["VARIANT"] == "cpu" and "VARIANT=cpu" in docker[0].all("ARG")
    version = re.search(r"MEDSSL_VERSION=(\S+)", " ".join(docker[-1].all("ARG"))).group(1)
    assert _arguments(recipe)["MEDSSL_VERSION"] == version


def test_same_lock_and_installation(recipe):
    wheels, runtime = recipe
    assert "docker/requirements-{{ VARIANT }}.lock /wheels/requirements.lock" in wheels["sections"]["%files"]
    assert "/wheels /wheels" in runtime["sections"]["%files from wheels"]
    docker_runs = [" ".join(c.split()) for s in stages() for c in s.all("RUN")]
    for stage in recipe:
        for cmd in _commands(stage["sections"]["%post"]):
            if "pip " in cmd or "useradd" in cmd or "groupadd" in cmd or "torchvision" in cmd:
                flat = cmd.replace('"{{ VARIANT }}"', '"${VARIANT}"').replace("https://download.pytorch.org/whl/cpu",
                                                                              "${TORCH_CPU_INDEX}")
                assert any(flat in run for run in docker_runs), f"not in the Dockerfile: {cmd}"


def test_post_scripts_are_valid_shell(recipe):
    args = _arguments(recipe)
    for stage in recipe:
        for name in ("%post", "%environment", "%runscript", "%test"):
            if name in stage["sections"]:
                proc = subprocess.run(["bash", "-n"], input=_render(stage["sections"][name], args), text=True,
                                      capture_output=True)
                assert proc.returncode == 0, (stage["header"], name, proc.stderr)


def test_same_user(recipe):
    post = " ".join(_commands(recipe[-1]["sections"]["%post"]))
    assert "useradd --uid 10001 --gid 10001" in post and "groupadd --gid 10001 medssl" in post
    assert stages()[-1].all("USER") == ["10001:10001"]


def test_same_entrypoint_and_health_check(recipe):
    runtime = recipe[-1]["sections"]
    assert _commands(runtime["%runscript"]) == ['exec medssl "$@"']
    assert stages()[-1].exec_form("ENTRYPOINT") == ["medssl"]
    health = stages()[-1].all("HEALTHCHECK")[0]
    assert _commands(runtime["%test"]) == ["medssl doctor"] and 'CMD ["medssl", "doctor"]' in health


def test_same_environment(recipe):
    """%environment, run by bash as Apptainer sources it, gives the Dockerfile's ENV; the cache folder is
    per user (Apptainer shares the host's /tmp) and $HOME is Apptainer's to set."""
    script = recipe[-1]["sections"]["%environment"] + "\nenv -0\n"
    proc = subprocess.run(["env", "-i", "bash", "-c", script], capture_output=True, text=True, check=True)
    got = dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)
    docker = stages()[-1].env()
    uid = os.getuid()
    expected = {k: v.replace("/tmp/medssl", f"/tmp/medssl-{uid}") for k, v in docker.items() if k != "HOME"}
    assert {k: got.get(k) for k in expected} == expected


def test_same_labels(recipe):
    labels = dict(line.strip().partition(" ")[::2] for line in recipe[-1]["sections"]["%labels"].strip().splitlines())
    docker = stages()[-1].labels()
    for key in ("org.opencontainers.image.title", "org.opencontainers.image.licenses"):
        assert labels[key] == docker[key]
    assert labels["org.opencontainers.image.version"] == "{{ MEDSSL_VERSION }}"
    assert labels["io.medssl.variant"] == "{{ VARIANT }}"


def test_documented_commands():
    text = DEF.read_text()
    assert "apptainer build medssl.sif docker/medssl.def" in text and "apptainer run --nv" in text
    readme = (ROOT / "README.md").read_text()
    assert "apptainer build" in readme and "apptainer run --nv" in readme
