"""The CLI on a read-only system, as in the containers: `medssl export`, `infer` and `doctor` run
with the package folder, $HOME, the model and the scans read-only, writing only into the output
folder and the cache (which falls back to $TMPDIR/medssl-UID when $HOME cannot be written).

Tests run as root, and permission bits do not stop root. Two things enforce it instead:

* the kernel: as root, every command runs as an unprivileged uid without a user name that owns only
  the output, cache and temporary folders (``setpriv``, keeping only CAP_DAC_READ_SEARCH, which
  lets it read the interpreter and the package wherever they are installed and write nothing);
* an audit hook in the child (PEP 578) that records every open-for-write, mkdir, rename, remove,
  chmod... from Python outside those folders, even one whose error a library swallows.

A control test writes into $HOME through the same harness and checks that both notice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UID = 54321  # no entry in /etc/passwd, as with `docker run --user 54321:54321`

HOOK = textwrap.dedent(r'''
    import os, sys
    _ALLOW = tuple(os.path.realpath(p).rstrip(os.sep) + os.sep for p in os.environ["CONFINE_ALLOW"].split(os.pathsep))
    _LOG = os.environ["CONFINE_LOG"]
    _BUSY = []
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    # event -> (indices of the paths written, index of its dir_fd argument or None)
    _PATH_EVENTS = {"os.mkdir": ((0,), 2), "os.remove": ((0,), 1), "os.rmdir": ((0,), 1), "os.chmod": ((0,), 2),
                    "os.chown": ((0,), 3), "os.truncate": ((0,), None), "os.utime": ((0,), 3),
                    "os.rename": ((0, 1), 2), "os.replace": ((0, 1), 2), "os.symlink": ((1,), 2),
                    "os.link": ((1,), 3), "shutil.rmtree": ((0,), 1), "os.mkfifo": ((0,), 2), "os.mknod": ((0,), 3)}

    def _outside(path):
        if isinstance(path, int) or path is None:
            return False
        path = os.fsdecode(os.fspath(path))
        full = os.path.realpath(os.path.join(os.getcwd(), path)) + os.sep
        return not full.startswith(_ALLOW)

    def _record(event, path):
        _BUSY.append(1)
        try:
            with open(_LOG, "a") as fh:
                fh.write(f"{event} {os.fsdecode(os.fspath(path))}\n")
        finally:
            _BUSY.pop()

    def _hook(event, args):
        if _BUSY:
            return
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
            if writes and _outside(path):
                _record(event, path)
        elif event in _PATH_EVENTS:
            paths, fd_at = _PATH_EVENTS[event]
            if fd_at is not None and fd_at < len(args) and args[fd_at] not in (None, -1):
                return  # relative to a dir_fd (shutil.rmtree): not resolvable here; the kernel still checks it
            for i in paths:
                if i < len(args) and _outside(args[i]):
                    _record(event, args[i])

    sys.addaudithook(_hook)
''')

RUN_CLI = HOOK + textwrap.dedent('''
    from medssl.cli import main
    sys.argv = ["medssl", *sys.argv[1:]]
    main()
''')


class Confined:
    """A staging area under /tmp that an unprivileged uid can read, with its writable folders."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="medssl-ro-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.root = os.geteuid() == 0
        self.home, self.out, self.tmp = self.base / "home", self.base / "out", self.base / "tmp"
        self.log = self.tmp / "writes.log"
        for d in (self.home, self.out, self.tmp):
            d.mkdir(mode=0o755)
        if self.root:
            for d in (self.out, self.tmp):
                os.chown(d, UID, UID)
        else:  # without root: the kernel stops this user only where the bits say so
            os.chmod(self.home, 0o555)

    def stage(self, src: Path, name: str) -> Path:
        """A read-only copy (owned by root, 0644 / 0755) of a file or folder."""
        dst = self.base / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        for p in [dst, *dst.rglob("*")] if dst.is_dir() else [dst]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        return dst

    def run(self, code: str, *args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "TMPDIR": str(self.tmp),
            # no USER / LOGNAME: as in a container started with an arbitrary --user
            "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "2", "MEDSSL_OFFLINE": "1", "LANG": "C.UTF-8",
            "CONFINE_ALLOW": os.pathsep.join([str(self.out), str(self.tmp), "/dev"]), "CONFINE_LOG": str(self.log),
        }
        if cache is not None:
            env["MEDSSL_CACHE"] = str(cache)
        prefix = []
        if self.root:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("needs setpriv (util-linux) to drop root")
            prefix = [setpriv, f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--inh-caps=+dac_read_search",
                      "--ambient-caps=+dac_read_search", "--"]
        return subprocess.run([*prefix, sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                              cwd=self.base, timeout=600)

    def writes_outside(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def confined():
    box = Confined()
    yield box
    box.close()


def test_control_a_write_into_home_is_caught(confined):
    """The harness is not blind: a write into $HOME fails (uid) and is recorded (hook) even when swallowed."""
    code = HOOK + textwrap.dedent('''
        try:
            with open(os.path.join(os.environ["HOME"], "settings.json"), "w") as fh:
                fh.write("{}")
            print("written")
        except PermissionError:
            print("denied")
        try:
            os.mkdir(os.path.join(os.path.dirname(__import__("medssl").__file__), "__scratch__"))
            print("written")
        except PermissionError:
            print("denied")
    ''')
    proc = confined.run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["denied", "denied"] or not confined.root
    assert [line.split()[0] for line in confined.writes_outside()] == ["open", "os.mkdir"]
    assert not list(confined.home.iterdir())


def test_export_infer_doctor_with_package_and_home_read_only(tiny_model, confined):
    ckpt, data = tiny_model
    run = confined.stage(ckpt.parent.parent, "run")
    scans = confined.stage(data / "imagesTs", "scans")
    model, pred = confined.out / "model", confined.out / "pred"

    proc = confined.run(RUN_CLI, "export", str(run), "--out", str(model))
    assert proc.returncode == 0, proc.stderr
    proc = confined.run(RUN_CLI, "infer", "--model", str(model), "--input", str(scans), "--output", str(pred),
                        "--preview", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    proc = confined.run(RUN_CLI, "doctor", "--model", str(model), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    status = {c["name"]: c for c in report["checks"]}
    assert report["healthy"] and status["model"]["status"] == "ok" and status["cache"]["status"] == "ok"
    fallback = confined.tmp / f"medssl-{UID if confined.root else os.getuid()}"
    assert str(fallback) in status["cache"]["detail"]  # $HOME cannot be written: the cache went to $TMPDIR
    assert "blocked" in status["offline"]["detail"]

    assert confined.writes_outside() == []
    assert not list(confined.home.iterdir())
    case = next(scans.iterdir()).name.replace("_0000.nii.gz", "")
    for name in (f"{case}.nii.gz", f"{case}_uncertainty.nii.gz", f"{case}.json", f"{case}.png", "summary.csv"):
        assert (pred / name).is_file(), name
    if confined.root:
        assert {p.stat().st_uid for p in [model, pred, *model.iterdir(), *pred.iterdir()]} == {UID}
    # matplotlib (the preview) kept its cache in the fallback cache folder, not in $HOME
    assert (fallback / "matplotlib").is_dir()


def test_cache_variable_is_honoured(tiny_model, confined):
    """With MEDSSL_CACHE set (as in the images), everything cached goes there."""
    ckpt, _ = tiny_model
    cache = confined.tmp / "cache"
    proc = confined.run(RUN_CLI, "doctor", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert f"{cache} ($MEDSSL_CACHE) writable" in proc.stdout
    assert confined.writes_outside() == []


def test_unwritable_cache_fails_the_doctor(confined):
    blocked = confined.base / "readonly-cache"  # owned by root: the child cannot create it
    blocked.mkdir(mode=0o555)
    proc = confined.run(RUN_CLI, "doctor", cache=blocked / "medssl")
    if not confined.root and os.access(blocked, os.W_OK):
        pytest.skip("this user can write anywhere")
    assert proc.returncode == 1
    assert "fail  cache" in proc.stdout and "not writable" in proc.stdout
