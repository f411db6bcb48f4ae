"""``medssl eval medmnist`` end to end on fake MedMNIST files: records, OOD, transfer, report, resume, CLI.

Two fake 2D datasets in the official npz layout (``breastmnist``: 40/20/20 images whose class
shows as brighter blobs; ``pneumoniamnist``: striped images, the OOD set of the other). The run
uses the real pretraining engine (SimCLR, 1 epoch of 2 steps), a random-init supervised
baseline, linear + kNN + 1-epoch fine-tuning at 10 % / 100 % labels and 2 seeds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medssl.config import build_config
from medssl.nets.backbones import build_backbone
from medssl.engines import image_ssl as engine
from medssl.errors import ConfigError
from medssl.medmnist import features, finetune, protocols
from medssl.medmnist import run as me
from medssl.medmnist.config import AUGMENT_PRESETS, MEDMNIST_SSL_METHODS, MedMNISTEvalConfig, load_medmnist_eval_config
from medssl.medmnist.plan import entry_settings, plan_run
from medssl.medmnist.transfer import transfer_matrix

N_SPLIT = {"train": 40, "val": 20, "test": 20}
DATASETS = ["breastmnist", "pneumoniamnist"]


def _fake_npz(path: Path, kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arrays = {}
    yy, xx = np.mgrid[:28, :28]
    for split, n in N_SPLIT.items():
        labels = np.arange(n) % 2
        rng.shuffle(labels)
        if kind == "blobs":  # class 1: a bright disc on a dark noisy background
            base = rng.normal(60, 20, (n, 28, 28))
            cy, cx = rng.integers(9, 19, (2, n))
            disc = ((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) < 25
            base += disc * np.where(labels == 1, 120, 30)[:, None, None]
        else:  # stripes of varying period, class 1 slightly brighter
            period = rng.integers(3, 7, n)[:, None, None]
            base = 100 + 80 * np.sin(2 * np.pi * xx[None] / period) + 40 * labels[:, None, None]
            base += rng.normal(0, 10, (n, 28, 28))
        arrays[f"{split}_images"] = np.clip(base, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("medmnist")
    _fake_npz(root / "breastmnist.npz", "blobs", 0)
    _fake_npz(root / "pneumoniamnist.npz", "stripes", 1)
    return root


def _raw(root: Path) -> dict:
    return {
        "name": "test-run",
        "datasets": list(DATASETS),
        "size": 28,
        "root": str(root),
        "verify": False,  # fake files: no official md5
        "device": "cpu",
        "pretrain": [
            {"name": "simclr", "method": "simclr", "epochs": 1, "batch_size": 20, "warmup_epochs": 0},
            {"name": "supervised", "method": "none", "init": "random"},
        ],
        "eval": {
            "protocols": ["linear", "knn", "finetune"],
            "fractions": [0.1, 1.0],
            "seeds": [0, 1],
            "linear": {"lrs": [0.01], "wds": [0.0], "epochs": 5},
            "knn": {"ks": [3, 5], "temps": [0.1]},
            "finetune": {"epochs": 1, "batch_size": 20},
        },
        "ood": {"enabled": True, "scores": ["msp", "energy", "mahalanobis"], "model": "linear"},
        "transfer": {"enabled": True},
    }


def _cfg(root: Path, **changes) -> MedMNISTEvalConfig:
    raw = _raw(root)
    raw.update(changes)
    return build_config(raw, model=MedMNISTEvalConfig)


N_RECORDS = 2 * 2 * 3 * 2 * 2  # datasets x entries x protocols x fractions x seeds
N_OOD = 2 * 2 * 3  # ordered pairs x entries x scores
N_TRANSFER = 2 * 1 * 2  # ordered pairs x pretraining entries x seeds (fraction 1.0)


def _plain(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in records]


@pytest.fixture(scope="module")
def full_run(fake_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with torch.random.fork_rng():
        results = me.run_medmnist_eval(_cfg(fake_root), out, progress=False)
    return out, results


def test_full_run_writes_everything(full_run):
    out, results = full_run
    for name in ("results.json", "results.csv", "ood.csv", "transfer.csv", "report.md", "config.yaml",
                 "breastmnist_linear.png", "breastmnist_knn.png", "pneumoniamnist_finetune.png",
                 "ood_breastmnist_vs_pneumoniamnist.png", "transfer_simclr_100pct.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["records"]) == N_RECORDS and len(results["records"]) == N_RECORDS
    assert len(saved["ood"]) == N_OOD and len(saved["transfer"]) == N_TRANSFER
    assert len((out / "results.csv").read_text().splitlines()) == N_RECORDS + 1
    keys = {(r["dataset"], r["method"], r["pretrain_seed"], r["protocol"], r["fraction"], r["seed"])
            for r in saved["records"]}
    assert len(keys) == N_RECORDS
    for r in saved["records"]:
        assert 0 <= r["acc"] <= 1 and 0 <= r["balanced_acc"] <= 1 and r["arch"] == "resnet18_28"
        assert r["n_train"] == (40 if r["fraction"] == 1.0 else 4)  # 10 % of 20 per class
    # the fake task is easy: the linear probe on random features already separates it
    lin = [r["auroc"] for r in saved["records"] if r["protocol"] == "linear" and r["fraction"] == 1.0]
    assert np.mean(lin) > 0.7
    # pretraining and feature caches where documented
    assert (out / "pretrain/simclr/seed0/breastmnist/pretrain.pt").is_file()
    marker = json.loads((out / "pretrain/simclr/seed0/breastmnist/medssl_pretrain.json").read_text())
    assert marker["complete"] and marker["epochs_run"] == 1 and marker["steps"] == 2 and marker["time_s"] > 0
    assert marker["code"].startswith("medssl ") and marker["resolved"]["method_kwargs"]["temperature"] == 0.5
    assert (out / "features/simclr__s0__breastmnist__pneumoniamnist_28_test.pt").is_file()  # OOD / transfer inputs
    # the report says what each pretraining ran and which code ran it
    pre = {(r["entry"], r["datasets"]): r for r in saved["pretraining"]}
    assert pre["simclr", "breastmnist"]["epochs_run"] == 1 and pre["simclr", "breastmnist"]["status"] == "done"
    assert saved["meta"]["code"].startswith("medssl ") and saved["meta"]["pretraining seeds"] == "0"


def test_report_tables_ci_and_published(full_run):
    out, _ = full_run
    report = (out / "report.md").read_text()
    assert "## breastmnist" in report and "### pneumoniamnist / knn" in report
    assert "± " in report and "(n=2)" in report
    # the supervised (random-init fine-tuning) row at 100 % sits beside MedMNIST v2's numbers
    line = next(l for l in report.splitlines() if l.startswith("| 100% | supervised") and "0.901" in l)
    assert "ResNet-18 (28): 0.901 / 0.863" in line
    assert "## Out-of-distribution detection" in report and "breastmnist → pneumoniamnist" in report
    assert "## Pretraining runs" in report and "| simclr | 0 | breastmnist | done | 1 / 1 | 2 |" in report
    assert "## Cross-dataset transfer" in report and "![transfer simclr, 100% labels]" in report


def test_ood_records_for_the_pair(full_run):
    _, results = full_run
    ood = results["ood"]
    pairs = {(r["train"], r["test"], r["method"], r["score"]) for r in ood}
    for a, b in (("breastmnist", "pneumoniamnist"), ("pneumoniamnist", "breastmnist")):
        for m in ("simclr", "supervised"):
            for s in ("msp", "energy", "mahalanobis"):
                assert (a, b, m, s) in pairs
    for r in ood:
        assert {"auroc", "aupr_in", "aupr_out", "fpr95", "roc"} <= set(r) and r["seed"] == 0
        assert r["relation"] == "far" and r["inverted"] == (r["auroc"] < 0.5)  # ultrasound vs chest X-ray
        assert 0 <= r["auroc"] <= 1 and 0 <= r["fpr95"] <= 1 and r["n_in"] == r["n_out"] == 20
    # stripes vs blobs: Mahalanobis on the features tells them apart
    maha = [r["auroc"] for r in ood if r["score"] == "mahalanobis"]
    assert np.mean(maha) > 0.8


def test_transfer_matrix(full_run):
    _, results = full_run
    flags, cells = transfer_matrix(results, "simclr", 1.0)
    assert sorted(flags) == sorted(DATASETS)
    for i in range(2):
        for j in range(2):
            text, mean = cells[i][j]
            assert "(n=2)" in text and 0 <= mean <= 1
    # the diagonal is the in-domain linear probe of the same entry
    a = flags[0]
    diag = np.mean([r["auroc"] for r in results["records"] if r["dataset"] == a and r["method"] == "simclr"
                    and r["protocol"] == "linear" and r["fraction"] == 1.0])
    assert math.isclose(cells[0][0][1], diag)
    assert {(r["pretrain"], r["dataset"]) for r in results["transfer"]} == {
        ("breastmnist", "pneumoniamnist"), ("pneumoniamnist", "breastmnist")}


def _counting(monkeypatch) -> dict:
    calls = {"linear_probe": 0, "knn_probe": 0, "fine_tune": 0, "pretrain_ssl": 0, "forward": 0}
    for module, name in ((protocols, "linear_probe"), (protocols, "knn_probe"), (finetune, "fine_tune"),
                         (engine, "pretrain_ssl"), (features, "forward")):
        real = getattr(module, name)

        def wrapped(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(module, name, wrapped)
    return calls


def test_rerun_recomputes_nothing(full_run, fake_root, monkeypatch):
    out, results = full_run
    calls = _counting(monkeypatch)
    again = me.run_medmnist_eval(_cfg(fake_root), out, progress=False)
    assert all(v == 0 for v in calls.values()), calls
    for kind in ("records", "ood", "transfer"):
        assert _plain(again[kind]) == _plain(results[kind])


def test_changed_setting_recomputes_only_what_it_affects(full_run, fake_root, monkeypatch, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(full_run[0], out)
    raw = _raw(fake_root)
    raw["eval"]["knn"]["ks"] = [3]  # only the kNN records depend on this
    calls = _counting(monkeypatch)
    res = me.run_medmnist_eval(build_config(raw, model=MedMNISTEvalConfig), out, progress=False)
    assert calls["knn_probe"] == 2 * 2 * 2 * 2 and calls["linear_probe"] == calls["fine_tune"] == 0
    assert calls["pretrain_ssl"] == 0 and calls["forward"] == 0  # features came from the cache
    assert len(res["records"]) == N_RECORDS


def test_interrupted_run_resumes_to_the_same_records(full_run, fake_root, monkeypatch, tmp_path):
    real_write = me.write_results

    def write_then_die(results, out_dir):
        paths = real_write(results, out_dir)
        if len(results["records"]) >= 3:
            raise KeyboardInterrupt
        return paths

    monkeypatch.setattr(me, "write_results", write_then_die)
    with pytest.raises(KeyboardInterrupt), torch.random.fork_rng():
        me.run_medmnist_eval(_cfg(fake_root), tmp_path, progress=False)
    assert len(json.loads((tmp_path / "results.json").read_text())["records"]) == 3
    monkeypatch.setattr(me, "write_results", real_write)

    calls = _counting(monkeypatch)
    with torch.random.fork_rng():
        resumed = me.run_medmnist_eval(_cfg(fake_root), tmp_path, progress=False)
    n_protocol = calls["linear_probe"] + calls["knn_probe"] + calls["fine_tune"]
    assert n_protocol == N_RECORDS + N_TRANSFER - 3  # the 3 saved records were not recomputed
    assert calls["pretrain_ssl"] == 2 - 1  # breastmnist's SimCLR finished before the interruption
    _, reference = full_run
    for kind in ("records", "ood", "transfer"):
        got, want = _plain(resumed[kind]), _plain(reference[kind])
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.keys() == w.keys()
            for k in g:
                if isinstance(w[k], float):
                    assert g[k] == pytest.approx(w[k], abs=1e-6), (kind, k, g, w)
                else:
                    assert g[k] == w[k], (kind, k)


def test_init_checkpoint_run_foreign_and_multidomain(full_run, fake_root, tmp_path):
    """Weights from another run (folder or file) give the same kNN result as in that run; a foreign
    DDP-style state dict and multi-domain pretraining on the union of both datasets run through."""
    src, reference = full_run
    ckpt = src / "pretrain/simclr/seed0/breastmnist/pretrain.pt"
    foreign = build_backbone("resnet18", 2, 3, small_input=True)  # an RGB network, e.g. ImageNet's
    torch.save({"module." + k: v for k, v in foreign.state_dict().items()}, tmp_path / "foreign.pth")
    raw = _raw(fake_root)
    raw.update(datasets=["breastmnist"], transfer={"enabled": False}, ood={"enabled": False})
    raw["eval"].update(protocols=["knn"], fractions=[1.0], seeds=[0])
    raw["pretrain"] = [
        {"name": "from-run", "method": "none", "init": "run", "run": str(src / "pretrain/simclr")},
        {"name": "from-file", "method": "none", "init": "checkpoint", "checkpoint": str(ckpt)},
        {"name": "foreign", "method": "none", "init": "checkpoint", "checkpoint": str(tmp_path / "foreign.pth")},
        {"name": "multi", "method": "byol", "datasets": DATASETS, "epochs": 1, "batch_size": 40, "warmup_epochs": 0},
    ]
    with torch.random.fork_rng():
        res = me.run_medmnist_eval(build_config(raw, model=MedMNISTEvalConfig), tmp_path / "out", progress=False)
    by = {r["method"]: r for r in res["records"]}
    want = next(r for r in reference["records"] if r["dataset"] == "breastmnist" and r["method"] == "simclr"
                and r["protocol"] == "knn" and r["fraction"] == 1.0 and r["seed"] == 0)
    assert want["params"]["vote"] == "balanced"
    for name in ("from-run", "from-file"):
        assert by[name]["auroc"] == pytest.approx(want["auroc"]) and by[name]["acc"] == pytest.approx(want["acc"])
    assert by["foreign"]["init"] == "checkpoint" and 0 <= by["foreign"]["auroc"] <= 1
    assert by["multi"]["pretrain_datasets"] == "breastmnist+pneumoniamnist"
    assert (tmp_path / "out/pretrain/multi/seed0/breastmnist+pneumoniamnist/pretrain.pt").is_file()


def test_ood_with_the_finetuned_model(fake_root, tmp_path, monkeypatch):
    raw = _raw(fake_root)
    raw["pretrain"] = [{"name": "supervised", "method": "none", "init": "random"}]
    raw["eval"].update(protocols=["finetune"], fractions=[1.0], seeds=[0])
    raw.update(ood={"enabled": True, "model": "finetune", "scores": ["energy", "mahalanobis"]},
               transfer={"enabled": False})
    calls = _counting(monkeypatch)
    res = me.run_medmnist_eval(build_config(raw, model=MedMNISTEvalConfig), tmp_path, progress=False)
    assert calls["fine_tune"] == 2  # the OOD scores reuse the saved fine-tuned models
    assert len(res["records"]) == 2 and len(res["ood"]) == 4
    assert {r["model"] for r in res["ood"]} == {"finetune"}
    assert (tmp_path / "models/supervised__s0__breastmnist__breastmnist_finetune.pt").is_file()


def test_test_labels_never_reach_a_selection(fake_root, tmp_path):
    """Evaluation hygiene: the same run on files whose test labels are permuted selects exactly the
    same linear lr x wd, kNN k x T and fine-tuning epoch, with the same validation AUROC; only the
    test metrics move."""
    permuted = tmp_path / "permuted"
    permuted.mkdir()
    with np.load(fake_root / "breastmnist.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["test_labels"] = np.random.default_rng(5).permutation(arrays["test_labels"])
    np.savez_compressed(permuted / "breastmnist.npz", **arrays)
    raw = _raw(fake_root)
    raw.update(datasets=["breastmnist"], ood={"enabled": False}, transfer={"enabled": False})
    raw["pretrain"] = [{"name": "supervised", "method": "none", "init": "random"}]
    raw["eval"].update(seeds=[0], finetune={"epochs": 3, "batch_size": 10},
                       linear={"lrs": [0.001, 0.1], "wds": [0.0, 0.1], "epochs": 5}, knn={"ks": [3, 9], "temps": [0.07, 0.5]})
    results = {}
    for name, root in (("real", fake_root), ("permuted", permuted)):
        raw["root"] = str(root)
        with torch.random.fork_rng():
            results[name] = me.run_medmnist_eval(build_config(raw, model=MedMNISTEvalConfig), tmp_path / name,
                                                 progress=False)["records"]
    chosen = ("protocol", "fraction", "params", "best_epoch", "val_auroc", "n_train")
    assert [{k: r.get(k) for k in chosen} for r in results["real"]] == \
        [{k: r.get(k) for k in chosen} for r in results["permuted"]]
    assert {r["protocol"] for r in results["real"]} == {"linear", "knn", "finetune"}
    assert [r["auroc"] for r in results["real"]] != [r["auroc"] for r in results["permuted"]]


# ---------------------------------------------------------------- pieces


def test_pretraining_is_resumed_reused_or_restarted(fake_root, tmp_path, monkeypatch):
    """Same settings: an unfinished pretraining resumes, a finished one is not called again;
    changed settings start over (the engine cannot resume another schedule)."""
    seen = []

    def fake_pretrain(method, images, out_dir, **kw):
        seen.append(kw["resume"])
        path = Path(out_dir) / "pretrain.pt"
        path.write_bytes(b"weights")
        return path

    monkeypatch.setattr(engine, "pretrain_ssl", fake_pretrain)

    def checkpoint(cfg):
        return me.MedMNISTRun(cfg, tmp_path, progress=False).backbone(cfg.pretrain[0], "breastmnist").checkpoint()

    cfg = _cfg(fake_root)
    path = checkpoint(cfg)
    assert path == tmp_path / "pretrain/simclr/seed0/breastmnist/pretrain.pt" and seen == [True]
    assert checkpoint(cfg) == path and seen == [True]
    marker = path.parent / "medssl_pretrain.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "complete": False}))  # killed mid-run
    checkpoint(cfg)
    assert seen == [True, True]
    raw = _raw(fake_root)
    raw["pretrain"][0]["lr"] = 0.5
    checkpoint(build_config(raw, model=MedMNISTEvalConfig))
    assert seen == [True, True, False]


def test_arch_kwargs_choose_the_stem(fake_root, tmp_path, monkeypatch):
    """``arch_kwargs`` reaches the random backbone and the pretraining engine; unset, the 28 px
    default (3x3/1 stem, no max-pool) is used and the record hashes stay those of older runs."""
    seen = {}

    def fake_pretrain(method, images, out_dir, **kw):
        seen["arch_kwargs"] = kw["arch_kwargs"]
        path = Path(out_dir) / "pretrain.pt"
        path.write_bytes(b"weights")
        return path

    monkeypatch.setattr(engine, "pretrain_ssl", fake_pretrain)
    raw = _raw(fake_root)
    raw["pretrain"][0]["arch_kwargs"] = {"small_input": False}
    raw["pretrain"][1]["arch_kwargs"] = {"small_input": False}
    cfg = build_config(raw, model=MedMNISTEvalConfig)
    run = me.MedMNISTRun(cfg, tmp_path, progress=False)
    run.backbone(cfg.pretrain[0], "breastmnist").checkpoint()
    assert seen["arch_kwargs"] == {"small_input": False}
    big = run.backbone(cfg.pretrain[1], "breastmnist").module().backbone
    small_cfg = _cfg(fake_root)
    small = me.MedMNISTRun(small_cfg, tmp_path / "b", progress=False).backbone(small_cfg.pretrain[1], "breastmnist")
    small = small.module().backbone
    assert big.conv1.stride == (2, 2) and big.conv1.kernel_size == (7, 7)
    assert small.conv1.stride == (1, 1) and small.conv1.kernel_size == (3, 3)
    x = torch.rand(2, 1, 28, 28)
    assert big(x).shape == small(x).shape == (2, 512)
    assert "arch_kwargs" not in entry_settings(small_cfg.pretrain[1], "breastmnist")
    assert entry_settings(cfg.pretrain[1], "breastmnist")["arch_kwargs"] == {"small_input": False}
    assert "supervised (none, resnet18 {'small_input': False})" in me.run_meta(cfg, torch.device("cpu"))["pretrain"]
    assert "supervised (none, resnet18)" in me.run_meta(small_cfg, torch.device("cpu"))["pretrain"]


def test_method_names_match_the_registry():
    from medssl.methods.image_ssl import SSL_METHODS
    from medssl.transforms.image_ssl_augment import PRESETS

    assert set(MEDMNIST_SSL_METHODS) == set(SSL_METHODS)
    assert set(AUGMENT_PRESETS) == set(PRESETS)


def _seeds_raw(root: Path) -> dict:
    raw = _raw(root)
    raw.update(datasets=["breastmnist"], ood={"enabled": False}, transfer={"enabled": False})
    raw["pretrain"] = [
        {"name": "simclr", "method": "simclr", "epochs": 1, "batch_size": 20, "warmup_epochs": 0},
        {"name": "random-init", "method": "none", "init": "random"},
    ]
    raw["eval"].update(protocols=["knn"], fractions=[1.0], seeds=[0, 1])
    return raw


def test_pretraining_seeds_resume_and_report(fake_root, tmp_path, monkeypatch):
    """pretrain_seeds: every entry is pretrained (random init: initialised) once per seed, every eval
    seed runs on each, records keep both seeds, the report gives the spread across pretrainings.
    A single-seed run's records are reused when seeds are added; only the new seed is computed."""
    out = tmp_path / "run"
    real_render = me.MedMNISTRun.render
    monkeypatch.setattr(me.MedMNISTRun, "render", lambda self: self.out / "report.md")  # plots cost seconds
    with torch.random.fork_rng():
        one = me.run_medmnist_eval(build_config(_seeds_raw(fake_root), model=MedMNISTEvalConfig), out, quiet=True)
    assert {(r["method"], r["pretrain_seed"], r["seed"]) for r in one["records"]} == {
        (m, 0, s) for m in ("simclr", "random-init") for s in (0, 1)}
    raw = _seeds_raw(fake_root)
    raw["pretrain_seeds"] = [0, 1]
    monkeypatch.setattr(me.MedMNISTRun, "render", real_render)
    calls = _counting(monkeypatch)
    with torch.random.fork_rng():
        two = me.run_medmnist_eval(build_config(raw, model=MedMNISTEvalConfig), out, quiet=True)
    assert calls["pretrain_ssl"] == 1 and calls["knn_probe"] == 2 * 2  # seed 1 only: 2 entries x 2 eval seeds
    assert _plain([r for r in two["records"] if r["pretrain_seed"] == 0]) == _plain(one["records"])
    assert (out / "pretrain/simclr/seed1/breastmnist/pretrain.pt").is_file()
    by = {(r["method"], r["pretrain_seed"], r["seed"]): r for r in two["records"]}
    # another pretraining / initialisation gives other features: other kNN probabilities
    for m in ("simclr", "random-init"):
        assert by[m, 0, 0]["auroc"] != by[m, 1, 0]["auroc"] or by[m, 0, 0]["acc"] != by[m, 1, 0]["acc"]
    text = (out / "report.md").read_text()
    assert "[2×2]" in text and "| 100% | simclr |" in text and "pretraining + probe (Welch" in text
    assert two["meta"]["pretraining seeds"] == "0, 1"
    from medssl.errors import DataError
    from medssl.medmnist.config import MedMNISTPretrainEntry
    from medssl.medmnist.plan import resolve_init

    several = MedMNISTPretrainEntry(name="x", method="none", init="run", run=out / "pretrain/simclr")
    with pytest.raises(DataError, match=r"several seeds \(seed0, seed1\)"):
        resolve_init(several, "breastmnist")
    one_seed = MedMNISTPretrainEntry(name="x", method="none", init="run", run=out / "pretrain/simclr/seed1")
    assert resolve_init(one_seed, "breastmnist") == out / "pretrain/simclr/seed1/breastmnist/pretrain.pt"
    monkeypatch.setattr(me.MedMNISTRun, "render", lambda self: self.out / "report.md")
    calls = _counting(monkeypatch)
    me.run_medmnist_eval(build_config(raw, model=MedMNISTEvalConfig), out, quiet=True)
    assert all(v == 0 for v in calls.values()), calls


def test_resume_key_covers_code_defaults(fake_root, monkeypatch):
    """A changed default in the code (a method's declared settings, the engine's weight decay, an
    augmentation recipe, a protocol's behaviour) changes the hashes of exactly the results it affects."""
    from medssl.methods.image_ssl import MoCoV3
    from medssl.transforms import image_ssl_augment as aug

    raw = _seeds_raw(fake_root)
    raw["pretrain"] = [{"name": "mocov3", "method": "mocov3", "epochs": 1, "batch_size": 20},
                       {"name": "simclr", "method": "simclr", "epochs": 1, "batch_size": 20},
                       {"name": "random-init", "method": "none", "init": "random"}]
    raw["eval"]["protocols"] = ["knn", "linear"]
    cfg = build_config(raw, model=MedMNISTEvalConfig)
    dims = lambda flag: 2  # noqa: E731

    def hashes():
        recs = plan_run(cfg, dims)["records"]
        return {(k[1], k[3]): h for k, h in recs.items()}

    base = hashes()
    assert len(set(base.values())) == 6  # 3 entries x 2 protocols
    changed = lambda now: {k for k in base if now[k] != base[k]}  # noqa: E731
    with monkeypatch.context() as m:
        m.setattr(MoCoV3, "default_kwargs", classmethod(lambda cls, arch, num_classes=None: {"temperature": 0.2}))
        assert changed(hashes()) == {("mocov3", "knn"), ("mocov3", "linear")}
    with monkeypatch.context() as m:
        m.setattr(engine, "DEFAULT_WEIGHT_DECAY", 0.1)
        assert changed(hashes()) == {(e, p) for e in ("mocov3", "simclr") for p in ("knn", "linear")}
    with monkeypatch.context() as m:
        m.setitem(aug.PRESETS, "simclr", {"views": ({"flip_p": 0.5},) * 2})
        assert changed(hashes()) == {("simclr", "knn"), ("simclr", "linear")}
    with monkeypatch.context() as m:
        m.setitem(protocols.PROTOCOL_VERSION, "knn", 99)
        assert changed(hashes()) == {(e, "knn") for e in ("mocov3", "simclr", "random-init")}
    assert hashes() == base  # nothing is cached across plans


def test_pretraining_restarts_when_a_code_default_changes(fake_root, tmp_path, monkeypatch):
    """The pretraining marker's settings cover the resolved defaults: a changed one is not reused."""
    from medssl.methods.image_ssl import SimCLR

    seen = []

    def fake_pretrain(method, images, out_dir, **kw):
        seen.append(kw["resume"])
        path = Path(out_dir) / "pretrain.pt"
        path.write_bytes(b"weights")
        return path

    monkeypatch.setattr(engine, "pretrain_ssl", fake_pretrain)
    cfg = build_config(_seeds_raw(fake_root), model=MedMNISTEvalConfig)

    def checkpoint():
        return me.MedMNISTRun(cfg, tmp_path, progress=False, quiet=True).backbone(cfg.pretrain[0], "breastmnist").checkpoint()

    checkpoint()
    checkpoint()
    assert seen == [True]  # finished and reused
    monkeypatch.setattr(SimCLR.__init__, "__defaults__", (512, 64, 0.5))  # projector output 128 -> 64
    checkpoint()
    assert seen == [True, False]  # other defaults: starts over


# ---------------------------------------------------------------- config and CLI


def _write_yaml(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_key_is_named(tmp_path, fake_root):
    raw = _raw(fake_root)
    raw["eval"]["protocol"] = ["linear"]
    with pytest.raises(ConfigError, match=r"unknown key 'eval.protocol'"):
        load_medmnist_eval_config(_write_yaml(tmp_path / "a.yaml", raw))
    raw = _raw(fake_root)
    raw["pretrain"][0]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"unknown key 'pretrain.0.epoch'"):
        load_medmnist_eval_config(_write_yaml(tmp_path / "b.yaml", raw))


def test_config_checks_and_list_overrides(tmp_path, fake_root):
    path = _write_yaml(tmp_path / "c.yaml", _raw(fake_root))
    cfg = load_medmnist_eval_config(path, ["pretrain.*.epochs=7", "pretrain.1.seed=3", "eval.seeds=[5]"])
    assert [p.epochs for p in cfg.pretrain] == [7, 7] and cfg.pretrain[1].seed == 3 and cfg.eval.seeds == [5]
    with pytest.raises(ConfigError, match="past the end"):
        load_medmnist_eval_config(path, ["pretrain.5.epochs=1"])
    bad = [
        ({"name": "x", "method": "none", "init": "checkpoint"}, "needs 'checkpoint"),
        ({"name": "x", "method": "simclr", "init": "run", "run": "r"}, "starts from random weights"),
        ({"name": "x", "method": "simclr", "datasets": ["adrenalmnist3d"]}, "pretrains 3D"),
        ({"name": "x", "method": "simclr", "datasets": ["breastmnis"]}, "did you mean 'breastmnist'"),
    ]
    for entry, message in bad:
        raw = _raw(fake_root)
        raw["pretrain"] = [entry]
        with pytest.raises(ConfigError, match=message):
            build_config(raw, model=MedMNISTEvalConfig)
    raw = _raw(fake_root)
    raw["eval"]["fractions"] = [0.0, 1.0]
    with pytest.raises(ConfigError, match=r"fractions must be in \(0, 1\]"):
        build_config(raw, model=MedMNISTEvalConfig)


def test_shipped_configs_load():
    root = Path(__file__).resolve().parents[2] / "configs" / "medmnist"
    names = sorted(p.name for p in root.glob("*.yaml"))
    shipped = {"tiny.yaml", "breastmnist_ssl.yaml", "breastmnist_supervised.yaml", "adrenalmnist3d_supervised.yaml",
               "breastmnist_seeds.yaml", "bundele.yaml"}
    assert shipped <= set(names)
    for name in names:
        cfg = load_medmnist_eval_config(root / name)
        assert cfg.pretrain and cfg.datasets
    ssl = load_medmnist_eval_config(root / "breastmnist_ssl.yaml")
    assert {p.method for p in ssl.pretrain} == set(MEDMNIST_SSL_METHODS) - {"supervised"} | {"none"}
    seeds = load_medmnist_eval_config(root / "breastmnist_seeds.yaml")  # issue 12: 3 pretraining seeds
    assert {p.method for p in seeds.pretrain} == {"simclr", "byol", "mocov3", "none"}
    assert all(seeds.seeds_of(p) == [0, 1, 2] for p in seeds.pretrain) and seeds.eval.fractions == [0.01, 0.1, 1.0]
    bundele = load_medmnist_eval_config(root / "bundele.yaml")  # the benchmark's protocol, for a GPU
    assert bundele.size == 64 and {p.arch for p in bundele.pretrain} == {"resnet50"}
    assert {p.augment_preset for p in bundele.pretrain if p.method != "none"} == {"byol"}  # one shared
    assert bundele.eval.select_on == "acc" and len([p for p in bundele.pretrain if p.method != "none"]) == 8


def test_cli_parses_and_calls_worker(tmp_path, fake_root, monkeypatch):
    from medssl.cli import app

    seen = {}

    def fake_run(cfg, out, progress=True, threads=None):
        seen.update(cfg=cfg, out=out, progress=progress, threads=threads)
        return {"records": [{}] * 3, "ood": [], "transfer": []}

    monkeypatch.setattr(me, "run_medmnist_eval", fake_run)
    path = _write_yaml(tmp_path / "cfg.yaml", _raw(fake_root))
    res = CliRunner().invoke(app, ["eval", "medmnist", str(path), "--set", "eval.seeds=[0]", "--set",
                                   "pretrain.*.epochs=2", "--out", str(tmp_path / "o"), "--no-progress",
                                   "--threads", "2", "--root", str(tmp_path / "a"), "--root", str(fake_root)])
    assert res.exit_code == 0, res.output
    assert seen["cfg"].eval.seeds == [0] and [p.epochs for p in seen["cfg"].pretrain] == [2, 2]
    assert seen["out"] == tmp_path / "o" and seen["progress"] is False and seen["threads"] == 2
    assert seen["cfg"].root == [tmp_path / "a", fake_root]  # --root (repeatable) replaces the config's
    assert "3 records" in res.output and "report.md" in res.output
    res = CliRunner().invoke(app, ["eval", "medmnist", str(path), "--threads", "0"])
    assert res.exit_code == 2  # a usage error
    res = CliRunner().invoke(app, ["eval", "medmnist", str(path), "--set", "eval.bogus=1"])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError) and "eval.bogus" in str(res.exception)


def test_report_baseline_must_name_an_entry(fake_root):
    assert _cfg(fake_root).report.baseline == "auto"
    assert _cfg(fake_root, report={"baseline": "supervised"}).report.baseline == "supervised"
    with pytest.raises(ConfigError, match=r"report.baseline 'nope' is not a pretrain entry"):
        _cfg(fake_root, report={"baseline": "nope"})
