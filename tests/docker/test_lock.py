"""The images install what pyproject.toml asks for: docker/requirements-{cpu,cuda}.lock pin every
dependency of pyproject (and the `dicom` extra) at a version its specifier allows, with hashes,
and nothing the project no longer needs; the CPU lock has the CPU torch, the CUDA lock the CUDA
one, neither has torchvision. After changing dependencies: `make image-lock`."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.docker.dockerfile import ROOT

FIX = "run `make image-lock` (scripts/lock_image.sh) after changing pyproject.toml's dependencies"


def parse_lock(text: str) -> dict[str, dict]:
    """name -> {"version", "hashes", "via"} of a pip-compile / uv lock with hashes and annotations."""
    entries: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if not line.strip() or (line.startswith("#") and current is None):
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)", line)
        if m:
            current = entries.setdefault(canonicalize_name(m.group(1)), {"version": m.group(3), "hashes": [], "via": []})
            continue
        if current is None:
            continue
        h = re.search(r"--hash=sha256:([0-9a-f]{64})", line)
        if h:
            current["hashes"].append(h.group(1))
        via = re.match(r"^\s*#\s+(?:via\s+)?(\S.*)$", line)
        if via and via.group(1).strip() != "via":
            current["via"].append(via.group(1).strip())
    return entries


def wanted() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dicom"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"python_version": "3.11", "sys_platform": "linux",
                                                                      "platform_system": "Linux", "extra": ""})]


@pytest.fixture(scope="module", params=["cpu", "cuda"])
def lock(request):
    return request.param, parse_lock((ROOT / "docker" / f"requirements-{request.param}.lock").read_text())


def test_every_dependency_is_pinned_within_its_specifier(lock):
    variant, entries = lock
    for req in wanted():
        name = canonicalize_name(req.name)
        assert name in entries, f"{variant} lock lacks {req}: {FIX}"
        version = Version(entries[name]["version"])
        assert req.specifier.contains(version, prereleases=True), \
            f"{variant} lock pins {name}=={version}, outside {req}: {FIX}"


def test_no_stale_direct_dependency(lock):
    variant, entries = lock
    direct = {name for name, e in entries.items() if any(v.startswith("medssl") for v in e["via"])}
    assert direct == {canonicalize_name(r.name) for r in wanted()}, FIX


def test_every_package_has_a_hash(lock):
    variant, entries = lock
    assert entries and all(e["hashes"] for e in entries.values()), [n for n, e in entries.items() if not e["hashes"]]


def test_torch_build_per_variant(lock):
    variant, entries = lock
    torch = entries["torch"]["version"]
    assert "torchvision" not in entries
    if variant == "cpu":
        assert torch.endswith("+cpu") and not any(n.startswith("nvidia-") for n in entries)
    else:
        assert "+" not in torch and any(n.startswith("nvidia-") for n in entries)


def test_both_variants_pin_the_same_versions_of_the_rest():
    cpu, cuda = (parse_lock((ROOT / "docker" / f"requirements-{v}.lock").read_text()) for v in ("cpu", "cuda"))
    shared = set(cpu) & set(cuda) - {"torch"}
    assert {n: cpu[n]["version"] for n in shared} == {n: cuda[n]["version"] for n in shared}
    assert set(cpu) - set(cuda) == set()


def test_parser_reads_annotations():
    entries = parse_lock("a==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via\n    #   medssl (pyproject.toml)\n"
                         "    #   b\nb==2 \\\n    --hash=sha256:" + "1" * 64 + "\n    # via a\n")
    assert entries["a"]["via"] == ["medssl (pyproject.toml)", "b"] and entries["b"]["via"] == ["a"]
