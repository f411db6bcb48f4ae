"""MedMNIST loading: the official table, real files from ../shared/data/medmnist, every error path.

Real files (official md5s): breastmnist.npz (2D, 28), adrenalmnist3d.npz (3D, 28) and
adrenalmnist3d_64.npz (3D, 64). Small fake npz files are used only for layouts that have no real
file here (RGB, multi-label) and for broken input. Downloads are tested against a local HTTP
server and an unreachable port, never the internet.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.medmnist import files as mm
from medssl.medmnist.data import MedMNISTSplit, load_medmnist, medmnist_summary
from medssl.medmnist.files import (
    download_medmnist,
    flag_info,
    medmnist_flags,
    medmnist_info,
    medmnist_path,
    medmnist_url,
    resolve_root,
    resolve_roots,
)
from medssl.errors import DataError, MedsslError

BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"
ADRENAL_MD5 = {28: "bbd3c5a5576322bc4cdfea780653b1ce", 64: "17721accfe9fb005146a47d33bc54b2f"}
ZENODO = "https://zenodo.org/records/10519652/files/"


@pytest.fixture(scope="module")
def mm_root(shared_data: Path) -> Path:
    root = shared_data / "medmnist"
    if not (root / "breastmnist.npz").is_file():
        pytest.skip(f"MedMNIST files not found in {root}")
    return root


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mm.ENV_ROOT, raising=False)


@pytest.fixture()
def breast_copy(mm_root: Path, tmp_path: Path) -> Path:
    """A writable folder holding a copy of breastmnist.npz."""
    shutil.copy(mm_root / "breastmnist.npz", tmp_path / "breastmnist.npz")
    return tmp_path


def _fake_npz(path: Path, **arrays: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


# ------------------------------------------------------------------------------- the table
def test_table_covers_every_flag_and_size():
    flags = medmnist_flags()
    assert len(flags) == 18 and flags[0] == "pathmnist" and "adrenalmnist3d" in flags
    tasks = {"binary-class", "multi-class", "multi-label, binary-class", "ordinal-regression"}
    for flag in flags:
        info = flag_info(flag)
        dims = info["spatial_dims"]
        assert info["sizes"] == ([28, 64, 128, 224] if dims == 2 else [28, 64]), flag
        assert flag.endswith("3d") == (dims == 3)
        assert info["task"] in tasks
        assert info["n_channels"] in (1, 3) and (dims == 2 or info["n_channels"] == 1)
        assert list(info["label"]) == [str(i) for i in range(len(info["label"]))]
        assert set(info["n_samples"]) == {"train", "val", "test"}
        for s in info["sizes"]:
            newest = info["md5"][str(s)]
            assert len(newest) == 32 and newest in info["md5_accepted"][str(s)]
    assert flag_info("chestmnist")["task"].startswith("multi-label") and len(flag_info("chestmnist")["label"]) == 14
    assert flag_info("breastmnist")["label"] == {"0": "malignant", "1": "normal, benign"}
    assert flag_info("adrenalmnist3d")["n_samples"] == {"train": 1188, "val": 98, "test": 298}
    assert flag_info("BreastMNIST") is flag_info("breastmnist")  # case-insensitive


def test_table_md5_matches_official_list(mm_root: Path):
    """md5 = newest release's value; every distinct official value is accepted."""
    official = json.loads((mm_root / "official_md5.json").read_text())
    version = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    for key, entries in official.items():
        flag, field = key.split("|")
        size = "28" if field == "MD5" else field.removeprefix("MD5_")
        info = flag_info(flag)
        assert info["md5"][size] == max(entries, key=lambda e: version(e[1]))[0], key
        assert set(info["md5_accepted"][size]) == {m for m, _ in entries}, key
    n_files = sum(len(flag_info(f)["sizes"]) for f in medmnist_flags())
    assert n_files == len(official) == 60


def test_file_names_and_urls(tmp_path: Path):
    assert medmnist_path("breastmnist", 28, tmp_path) == tmp_path / "breastmnist.npz"
    assert medmnist_path("breastmnist", 224, tmp_path).name == "breastmnist_224.npz"
    assert medmnist_path("AdrenalMNIST3D", 64, tmp_path).name == "adrenalmnist3d_64.npz"
    assert medmnist_url("breastmnist") == ZENODO + "breastmnist.npz?download=1"
    assert medmnist_url("organmnist3d", 64) == ZENODO + "organmnist3d_64.npz?download=1"
    assert medmnist_info()["url_template"].startswith(ZENODO)


def test_resolve_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_root(None) == tmp_path / "home" / ".medmnist"  # official default
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "env"))
    assert resolve_root(None) == tmp_path / "env"
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"  # explicit wins
    assert resolve_root("~/x") == tmp_path / "home" / "x"


def test_several_roots_are_searched_in_order(breast_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """$MEDMNIST_ROOT holds folders separated by os.pathsep (as PATH); an explicit list wins; the
    first folder with the file is read; a missing file's message names every folder searched."""
    empty, other = tmp_path / "empty", tmp_path / "other"
    monkeypatch.setenv("MEDMNIST_ROOT", os.pathsep.join([str(empty), "", str(breast_copy), str(empty)]))
    assert resolve_roots(None) == [empty, breast_copy]  # empty parts and duplicates dropped
    assert resolve_root(None) == empty  # downloads go to the first
    assert medmnist_path("breastmnist") == breast_copy / "breastmnist.npz"
    assert load_medmnist("breastmnist", "val", verify=False).path == breast_copy / "breastmnist.npz"
    assert resolve_roots([other, empty]) == [other, empty]  # explicit folders, not the variable
    d = load_medmnist("breastmnist", "val", root=[other, breast_copy], verify=False)
    assert d.path == breast_copy / "breastmnist.npz"
    with pytest.raises(DataError) as e:
        load_medmnist("breastmnist", root=[other, empty])
    assert f"any of {other}, {empty}" in str(e.value)


# ------------------------------------------------------------------------------ real files
def test_breastmnist(mm_root: Path):
    counts = {"train": 546, "val": 78, "test": 156}
    raw = np.load(mm_root / "breastmnist.npz")
    for split, n in counts.items():
        d = load_medmnist("breastmnist", split, root=mm_root)
        assert isinstance(d, MedMNISTSplit) and len(d) == n
        assert d.images.dtype == torch.uint8 and tuple(d.images.shape) == (n, 1, 28, 28)
        assert d.labels.dtype == torch.long and tuple(d.labels.shape) == (n,)
        assert set(d.labels.unique().tolist()) == {0, 1}
        assert d.md5 == BREAST_MD5 and d.path == mm_root / "breastmnist.npz"
        assert (d.flag, d.split, d.size, d.task) == ("breastmnist", split, 28, "binary-class")
        assert (d.n_channels, d.spatial_dims, d.num_classes, d.multilabel) == (1, 2, 2, False)
        assert d.label_names == ["malignant", "normal, benign"]
        np.testing.assert_array_equal(d.images[:, 0].numpy(), raw[f"{split}_images"])
        np.testing.assert_array_equal(d.labels.numpy(), raw[f"{split}_labels"][:, 0])
    assert "images=(156, 1, 28, 28)" in repr(d) and len(repr(d)) < 300


@pytest.mark.parametrize("size", [28, 64])
def test_adrenalmnist3d(mm_root: Path, size: int):
    for split, n in {"train": 1188, "val": 98, "test": 298}.items():
        d = load_medmnist("adrenalmnist3d", split, size=size, root=mm_root)
        assert tuple(d.images.shape) == (n, 1, size, size, size) and d.images.dtype == torch.uint8
        assert tuple(d.labels.shape) == (n,) and d.labels.dtype == torch.long
        assert set(d.labels.unique().tolist()) <= {0, 1}
        assert d.md5 == ADRENAL_MD5[size] and d.spatial_dims == 3
        assert d.label_names == ["normal", "hyperplasia"]
    assert d.images.is_contiguous()


def test_env_var_root_is_honoured(mm_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(mm_root))
    d = load_medmnist("breastmnist", "val")
    assert len(d) == 78 and d.path == mm_root / "breastmnist.npz"
    assert medmnist_summary("breastmnist")["path"] == str(mm_root / "breastmnist.npz")


def test_summary(mm_root: Path):
    s = medmnist_summary("adrenalmnist3d", size=64, root=mm_root)
    assert s["md5_verified"] is True and s["md5"] == ADRENAL_MD5[64] and "3.0.2" in s["releases"]
    assert (s["task"], s["n_channels"], s["spatial_dims"]) == ("binary-class", 1, 3)
    assert s["label_names"] == {"0": "normal", "1": "hyperplasia"}
    for split, n in {"train": 1188, "val": 98, "test": 298}.items():
        assert s["splits"][split]["count"] == n
        assert s["splits"][split]["image_shape"] == [1, 64, 64, 64]
        assert sum(s["splits"][split]["class_counts"].values()) == n
    json.dumps(s)  # JSON-ready
    b = medmnist_summary("breastmnist", root=mm_root)
    assert b["splits"]["train"]["class_counts"] == {"0": 147, "1": 399}


def test_shared_folder_is_never_written(mm_root: Path):
    """The shared data is the user's: nothing may appear there (md5 records go to the cache folder)."""
    before = sorted(p.name for p in mm_root.iterdir())
    for f in ("breastmnist", "adrenalmnist3d"):
        mm._MD5_CACHE.clear()
        load_medmnist(f, "val", root=mm_root)
    assert sorted(p.name for p in mm_root.iterdir()) == before


# -------------------------------------------------------------------------------- md5 cache
def test_md5_cache_lives_in_the_cache_folder(breast_copy: Path, tmp_path_factory, monkeypatch: pytest.MonkeyPatch):
    """Verification of a copy in a WRITABLE folder writes nothing there: the md5 record goes to
    $MEDSSL_CACHE/md5, keyed by the resolved path, and a new process reads it instead of rehashing."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("MEDSSL_CACHE", str(cache))
    path = breast_copy / "breastmnist.npz"
    listing = sorted(p.name for p in breast_copy.iterdir())
    mm._MD5_CACHE.clear()
    assert load_medmnist("breastmnist", "test", root=breast_copy).md5 == BREAST_MD5
    assert sorted(p.name for p in breast_copy.iterdir()) == listing  # the data folder is untouched
    record = mm.md5_record_path(path)
    assert record.parent == cache / "md5" and record.is_file()
    rec = json.loads(record.read_text())
    st = path.stat()
    assert rec == {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                   "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "md5": BREAST_MD5}
    assert [p.name for p in record.parent.iterdir()] == [record.name]  # written atomically: no temporary left

    def no_hashing(*a, **k):
        raise AssertionError("rehashed a file whose md5 is cached")

    mm._MD5_CACHE.clear()  # a new process: only the record is left
    monkeypatch.setattr(mm.hashlib, "md5", no_hashing)
    assert load_medmnist("breastmnist", "val", root=breast_copy).md5 == BREAST_MD5
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # file changed
    with pytest.raises(AssertionError, match="rehashed"):
        load_medmnist("breastmnist", "val", root=breast_copy)
    assert sorted(p.name for p in breast_copy.iterdir()) == listing


def test_read_only_cache_folder_only_loses_the_record(breast_copy: Path, tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.mktemp("ro_cache")
    (cache / "md5").mkdir()
    (cache / "md5").chmod(0o555)
    monkeypatch.setenv("MEDSSL_CACHE", str(cache))
    mm._MD5_CACHE.clear()
    try:
        assert load_medmnist("breastmnist", "val", root=breast_copy).md5 == BREAST_MD5
        if os.geteuid() != 0:  # root writes anyway
            assert not list((cache / "md5").iterdir())
    finally:
        (cache / "md5").chmod(0o755)


# --------------------------------------------------------------------- layouts (fake files)
def test_rgb_2d_and_multilabel_layouts(tmp_path: Path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 28, 28, 3), dtype=np.uint8)
    _fake_npz(tmp_path / "bloodmnist.npz", train_images=rgb, train_labels=np.array([[0], [7], [3], [1], [2]], np.uint8))
    d = load_medmnist("bloodmnist", root=tmp_path, verify=False)
    assert tuple(d.images.shape) == (5, 3, 28, 28) and d.images.is_contiguous() and d.md5 is None
    np.testing.assert_array_equal(d.images.numpy(), rgb.transpose(0, 3, 1, 2))
    assert d.labels.tolist() == [0, 7, 3, 1, 2]

    multi = rng.integers(0, 2, (4, 14), dtype=np.uint8)
    _fake_npz(
        tmp_path / "chestmnist_64.npz",
        val_images=np.zeros((4, 64, 64), np.uint8),
        val_labels=multi,
    )
    d = load_medmnist("chestmnist", "val", size=64, root=tmp_path, verify=False)
    assert tuple(d.images.shape) == (4, 1, 64, 64) and d.multilabel
    assert d.labels.dtype == torch.long and tuple(d.labels.shape) == (4, 14)
    np.testing.assert_array_equal(d.labels.numpy(), multi)


# ----------------------------------------------------------------------------- bad input
def test_missing_file_says_what_to_put_where(tmp_path: Path):
    with pytest.raises(DataError) as e:
        load_medmnist("breastmnist", root=tmp_path)
    msg = str(e.value)
    assert "breastmnist.npz" in msg and str(tmp_path) in msg and "MEDMNIST_ROOT" in msg
    assert ZENODO + "breastmnist.npz?download=1" in msg and BREAST_MD5 in msg
    with pytest.raises(DataError, match=r"adrenalmnist3d_64\.npz"):
        medmnist_summary("adrenalmnist3d", size=64, root=tmp_path / "nowhere")


def test_wrong_md5_flipped_byte(breast_copy: Path):
    path = breast_copy / "breastmnist.npz"
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        load_medmnist("breastmnist", root=breast_copy)
    msg = str(e.value)
    assert "breastmnist.npz" in msg and BREAST_MD5 in msg and mm.file_md5(path) in msg
    assert "the file is corrupt or not the official release" in msg
    assert e.value.path == path


def test_wrong_md5_fake_file(tmp_path: Path):
    _fake_npz(tmp_path / "adrenalmnist3d.npz", train_images=np.zeros((2, 28, 28, 28), np.uint8),
              train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(DataError, match="corrupt or not the official release"):
        medmnist_summary("adrenalmnist3d", root=tmp_path)
    assert len(load_medmnist("adrenalmnist3d", root=tmp_path, verify=False)) == 2  # opt-out works


def test_unknown_flag():
    with pytest.raises(DataError) as e:
        load_medmnist("nosuchmnist")
    assert "nosuchmnist" in str(e.value) and "breastmnist" in str(e.value) and "synapsemnist3d" in str(e.value)
    with pytest.raises(DataError, match="did you mean 'breastmnist'"):
        medmnist_path("breastmnst")


def test_unsupported_size_and_split(mm_root: Path):
    with pytest.raises(DataError, match=r"no size 128.*28, 64\b"):
        load_medmnist("adrenalmnist3d", size=128, root=mm_root)
    with pytest.raises(DataError, match=r"no size 32.*28, 64, 128, 224"):
        medmnist_summary("breastmnist", size=32, root=mm_root)
    with pytest.raises(DataError, match=r"unknown split 'valid'.*train, val, test"):
        load_medmnist("breastmnist", "valid", root=mm_root)


def test_non_zip_file(breast_copy: Path):
    path = breast_copy / "breastmnist.npz"
    path.write_text("this is not an npz archive\n" * 100)
    with pytest.raises(DataError, match="corrupt or not the official release"):
        load_medmnist("breastmnist", root=breast_copy)  # the md5 check comes first
    with pytest.raises(DataError, match=r"breastmnist\.npz: is not a valid \.npz"):
        load_medmnist("breastmnist", root=breast_copy, verify=False)


def test_truncated_real_npz(mm_root: Path, tmp_path: Path):
    raw = (mm_root / "breastmnist.npz").read_bytes()
    (tmp_path / "breastmnist.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as e:
        load_medmnist("breastmnist", root=tmp_path, verify=False)
    assert "breastmnist.npz" in str(e.value) and "not a valid .npz" in str(e.value)


def test_missing_key_and_bad_shape(tmp_path: Path):
    _fake_npz(tmp_path / "breastmnist.npz", train_images=np.zeros((3, 28, 28), np.uint8),
              train_labels=np.zeros((3, 1), np.uint8))
    with pytest.raises(DataError) as e:
        load_medmnist("breastmnist", "val", root=tmp_path, verify=False)
    assert "breastmnist.npz" in str(e.value) and "'val_images'" in str(e.value)
    _fake_npz(tmp_path / "adrenalmnist3d.npz", train_images=np.zeros((3, 28, 28), np.uint8),
              train_labels=np.zeros((3, 1), np.uint8))
    with pytest.raises(DataError, match=r"adrenalmnist3d\.npz: array 'train_images' has shape \(3, 28, 28\)"):
        load_medmnist("adrenalmnist3d", root=tmp_path, verify=False)
    _fake_npz(tmp_path / "breastmnist.npz", test_images=np.zeros((3, 28, 28), np.uint8),
              test_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(DataError, match=r"'test_labels' has shape \(2, 1\), expected \(3, 1\)"):
        load_medmnist("breastmnist", "test", root=tmp_path, verify=False)


# -------------------------------------------------------------------------------- download
def test_offline_download_names_file_folder_and_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(mm, "URL_TEMPLATE", "http://127.0.0.1:9/{filename}?download=1")
    root = tmp_path / "mm"
    with pytest.raises(DataError) as e:
        download_medmnist("breastmnist", 64, root, timeout=3)
    msg = str(e.value)
    assert "cannot download http://127.0.0.1:9/breastmnist_64.npz" in msg
    assert "breastmnist_64.npz" in msg and str(root) in msg and "MEDMNIST_ROOT" in msg
    assert list(root.iterdir()) == []  # no partial file left behind
    with pytest.raises(DataError, match="cannot download"):
        load_medmnist("breastmnist", root=root, download=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture()
def local_server(tmp_path: Path):
    """An HTTP server on localhost serving tmp_path/'served'; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: _Quiet(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_and_renames(mm_root: Path, tmp_path: Path, local_server, monkeypatch):
    served, base = local_server
    shutil.copy(mm_root / "breastmnist.npz", served / "breastmnist.npz")
    (served / "adrenalmnist3d.npz").write_bytes(b"not the file")
    monkeypatch.setattr(mm, "URL_TEMPLATE", base + "{filename}")
    root = tmp_path / "dl"
    d = load_medmnist("breastmnist", "val", root=root, download=True)
    assert len(d) == 78 and d.md5 == BREAST_MD5 and (root / "breastmnist.npz").is_file()
    assert download_medmnist("breastmnist", root=root) == root / "breastmnist.npz"  # present: verified only
    with pytest.raises(DataError, match=r"adrenalmnist3d\.npz has md5 .* nothing was kept"):
        download_medmnist("adrenalmnist3d", root=root)
    with pytest.raises(DataError, match="HTTP 404"):
        download_medmnist("adrenalmnist3d", 64, root=root)
    assert sorted(p.name for p in root.iterdir()) == ["breastmnist.npz"]


# ------------------------------------------------------------------------------------- CLI
def test_cli_prints_summary(mm_root: Path):
    from typer.testing import CliRunner

    from medssl.cli import app

    result = CliRunner().invoke(app, ["data", "medmnist", "breastmnist", "--root", str(mm_root)])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert {k: v["count"] for k, v in s["splits"].items()} == {"train": 546, "val": 78, "test": 156}
    assert s["md5_verified"] is True

    result = CliRunner().invoke(app, ["data", "medmnist", "adrenalmnist3d", "--size", "64", "--root", str(mm_root)])
    assert result.exit_code == 0 and json.loads(result.stdout)["splits"]["val"]["image_shape"] == [1, 64, 64, 64]


def test_cli_errors_are_medssl_errors(mm_root: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from medssl.cli import app

    for args in (["nosuchflag", "--root", str(mm_root)], ["breastmnist", "--root", str(tmp_path)],
                 ["adrenalmnist3d", "--size", "224", "--root", str(mm_root)]):
        result = CliRunner().invoke(app, ["data", "medmnist", *args])
        assert result.exit_code != 0 and isinstance(result.exception, MedsslError), args


def test_console_entry_one_line_error(tmp_path: Path):
    exe = Path(sys.executable).parent / "medssl"
    if not exe.exists():
        pytest.skip("medssl console script not installed in this environment")
    proc = subprocess.run(
        [str(exe), "data", "medmnist", "nosuchflag", "--root", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error:") and "nosuchflag" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_flipped_byte_with_size_and_mtime_kept_is_caught(breast_copy: Path):
    """A verified file changed in place with its mtime set back: the cached md5 must not be reused."""
    import os

    path = breast_copy / "breastmnist.npz"
    load_medmnist("breastmnist", root=breast_copy)  # verified once: md5 recorded in the cache folder
    st = path.stat()
    with open(path, "r+b") as f:  # same size
        f.seek(2000)
        b = f.read(1)
        f.seek(2000)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(DataError, match="corrupt or not the official release"):
        load_medmnist("breastmnist", root=breast_copy)
    assert sorted(p.name for p in breast_copy.iterdir()) == ["breastmnist.npz"]  # no sidecar in the data folder
