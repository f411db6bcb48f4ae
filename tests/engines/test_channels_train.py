"""Two-channel cases through the real training loop: supervised (both channels vs one), UMCT,
pseudo-labels and resume. The phantoms' classes can only be told apart with both channels
(:mod:`medssl.data.phantom_channels`), so the one-channel control must do worse."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from medssl.config import load_config
from medssl.data.io import read_volume
from medssl.data.phantoms import generate_sample_data
from medssl.engines.train import run_training
from medssl.errors import DataError, RunInterrupted
from medssl.inference.pseudo_label import export_pseudo_labels
from medssl.inference.review_manifest import ReviewManifest
from tests.methods.test_umct import umct_cfg


@pytest.fixture(scope="module")
def two_ch(tmp_path_factory):
    root = tmp_path_factory.mktemp("ch_train") / "ds"
    generate_sample_data(root, seed=2, n_labeled=3, n_unlabeled=2, n_val=2, n_test=2, progress=False,
                         shape=(32, 32, 32), channels=2)
    return root


def _sup_cfg(root, **extra):
    over = {"method": "supervised", "data.root": str(root), "data.patch_size": "[32,32,32]", "data.batch_size": 2,
            "model.channels": "[8,16,32]", "model.strides": "[2,2]", "trainer.max_steps": 60,
            "trainer.val_every": 60, "trainer.progress": "false", "trainer.threads": 1, "trainer.precision": "bf16",
            "val.roi_size": "[32,32,32]", "optim.lr": 0.01, **extra}
    return load_config(None, [f"{k}={v}" for k, v in over.items()])


def test_second_channel_is_used(two_ch, tmp_path):
    both = run_training(_sup_cfg(two_ch), out=tmp_path / "both")
    one = run_training(_sup_cfg(two_ch, **{"data.channels": "[0]"}), out=tmp_path / "one")
    # channel 0 alone cannot tell class 1 from class 2: much lower Dice on the same cases and steps
    assert both["test"]["dice_mean"] > one["test"]["dice_mean"] + 0.15, (both["test"], one["test"])
    ckpt = torch.load(tmp_path / "both/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    first = next(v for k, v in ckpt["state_dict"].items() if v.ndim == 5)
    assert first.shape[1] == 2  # the network's first convolution takes both channels
    assert ckpt["medssl"]["dataset"]["channel_names"] == {"0": "T1", "1": "T2"}
    cfg = json.loads(json.dumps(ckpt["medssl"]["config"]))
    assert cfg["data"]["channels"] is None


def test_umct_two_channels_pseudo_labels_and_resume(two_ch, tmp_path, monkeypatch):
    over = {"data.root": str(two_ch), "data.patch_size": "[16,16,16]", "trainer.max_steps": 6, "trainer.val_every": 3}
    ref = run_training(umct_cfg(two_ch, **over), out=tmp_path / "ref")
    assert ref["step"] == 6

    # interrupted after its step-3 checkpoint, resumed: the same weights as the uninterrupted run
    from medssl.methods.umct import UMCT

    real = UMCT.training_step

    def stop_at_4(self, batch, idx):
        if self.global_step == 4:
            raise KeyboardInterrupt
        return real(self, batch, idx)

    monkeypatch.setattr(UMCT, "training_step", stop_at_4)
    with pytest.raises(RunInterrupted):
        run_training(umct_cfg(two_ch, **over), out=tmp_path / "cut")
    monkeypatch.setattr(UMCT, "training_step", real)
    res = run_training(umct_cfg(two_ch, **over), out=tmp_path / "cut", resume=True)
    assert res["step"] == 6 and res["test"]["dice"] == ref["test"]["dice"]
    a = torch.load(tmp_path / "ref/checkpoints/last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut/checkpoints/last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    manifest = ReviewManifest.read(export_pseudo_labels(tmp_path / "ref/checkpoints/last.ckpt", two_ch,
                                                        tmp_path / "pl", progress=False))
    case = manifest.cases[0]
    assert case.image.endswith("_0000.nii.gz") and len(case.channels) == 1 and case.channels[0].endswith("_0001.nii.gz")
    label = read_volume(manifest.resolve(case.label))
    assert label.same_geometry(read_volume(case.image))  # outputs on channel 0's grid
    assert len(case.views) == 3


def test_one_channel_checkpoint_refuses_two_channel_data_for_pseudo_labels(two_ch, tmp_path):
    one = tmp_path / "one_ch"  # the same cases with channel 0 only
    shutil.copytree(two_ch, one, ignore=shutil.ignore_patterns("*_0001.nii.gz"))
    spec = json.loads((one / "dataset.json").read_text())
    (one / "dataset.json").write_text(json.dumps({**spec, "channel_names": {"0": "T1"}}))
    run_training(_sup_cfg(one, **{"trainer.max_steps": 1, "trainer.val_every": 1}), out=tmp_path / "run")
    with pytest.raises(DataError, match=r"2 channel\(s\) \(T1, T2\) differ from the checkpoint's 1 \(T1\)"):
        export_pseudo_labels(tmp_path / "run/checkpoints/last.ckpt", two_ch, tmp_path / "pl", progress=False)


@pytest.mark.parametrize("dims", [2, 3])
def test_contrastive_pretraining_takes_both_channels(two_ch, tmp_path, dims):
    from tests.methods.test_contrastive import _pre_cfg

    cfg = _pre_cfg(two_ch, "global", dims=dims, **{"data.patch_size": "[32,32,16]" if dims == 2 else "[16,16,16]"})
    run_training(cfg, out=tmp_path / "g")
    state = torch.load(tmp_path / "g/checkpoints/last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    first = next(v for k, v in state.items() if "encoder" in k and v.ndim == dims + 2)
    assert first.shape[1] == 2  # the encoder's first convolution sees both channels
