"""The OOD step of a MedMNIST run, right after the records of ``(A, entry)``.

The model trained on ``A`` with 100 % of the labels and the first seed (a linear head on frozen
features, or the fine-tuned network) scores ``A``'s test set (in-distribution) against the test
set of every other dataset of the run with the same spatial dims (converted to ``A``'s channels
and size), with max-softmax, energy and Mahalanobis (:mod:`medssl.medmnist.ood`); AUROC, AUPR-In,
AUPR-Out, FPR95 and the ROC curve per pair and score. The linear head's lr x wd and the fine-tuned
epoch are the ones the protocols selected on validation. One result per pretraining seed (each is
another detector). Every result says whether its pair is near- or far-OOD
(:func:`~medssl.medmnist.ood.ood_relation`) and whether the score is inverted (AUROC < 0.5: it
ranks the OOD set as more in-distribution than the in-distribution test set).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from medssl.medmnist import features as feat
from medssl.medmnist import ood as ood_mod
from medssl.medmnist import protocols
from medssl.medmnist.backbone_provider import Backbone, in_channels_of, num_outputs
from medssl.medmnist.channels import adapt_channels
from medssl.medmnist.config import MedMNISTPretrainEntry

#: ``(target flag, split) -> (N, D)`` features and ``target flag -> (N, K)`` test logits
Scorers = tuple[Callable[[str, str], torch.Tensor], Callable[[str], torch.Tensor]]


def ood_step(run, flag: str, e: MedMNISTPretrainEntry, pretrain_seed: int) -> None:
    """Every missing OOD result of ``(flag, e, pretrain_seed)`` (see the module doc); ``run`` is the
    :class:`~medssl.medmnist.run.MedMNISTRun`."""
    cfg, seed0 = run.cfg, run.cfg.eval.seeds[0]
    others = [o for o in cfg.datasets if o != flag and run.dims(o) == run.dims(flag)]
    todo = [(o, s) for o in others for s in cfg.ood.scores
            if not run.done("ood", (flag, o, e.name, pretrain_seed, s, seed0))]
    if not todo:
        return
    bb = run.backbone(e, flag, pretrain_seed)
    tr = run.data(flag, "train")
    if cfg.ood.model == "linear":
        feats_of, logits_of = _linear_model(run, bb, flag, seed0)
    else:
        feats_of, logits_of = _finetune_model(run, bb, flag, seed0)
    maha = None
    if "mahalanobis" in cfg.ood.scores:
        labels = None if tr.multilabel else tr.labels.numpy()
        maha = ood_mod.MahalanobisScorer().fit(feats_of(flag, "train").numpy(), labels)

    def score(name: str, target: str) -> np.ndarray:
        if name == "mahalanobis":
            return maha.score(feats_of(target, "test").numpy())
        logits = logits_of(target)
        return ood_mod.max_softmax(logits) if name == "msp" else ood_mod.energy(logits)

    for other, name in todo:
        s_in, s_out = score(name, flag), score(name, other)
        metrics = ood_mod.ood_metrics(s_in, s_out)
        run.add("ood", {"train": flag, "test": other, "method": e.name, "pretrain_seed": pretrain_seed,
                        "score": name, "seed": seed0, **metrics, "inverted": bool(metrics["auroc"] < 0.5),
                        "relation": ood_mod.ood_relation(flag, other), "model": cfg.ood.model,
                        "n_in": len(s_in), "n_out": len(s_out),
                        "roc": ood_mod.roc_curve_points(s_in, s_out)})


def _linear_model(run, bb: Backbone, flag: str, seed: int) -> Scorers:
    """Features and linear-head logits (100 % labels, ``seed``; lr/wd as the probe selected on val)."""
    ev = run.cfg.eval
    tr = run.data(flag, "train")
    rec = run.done("records", (flag, bb.entry.name, bb.pseed, "linear", 1.0, seed))
    if rec is not None and rec.get("params"):
        params = rec["params"]
    else:  # the linear protocol did not run at 100 %: select lr x wd the same way
        _, params, _ = protocols.linear_probe(
            run.probe_data(bb, flag, torch.arange(len(tr))), lrs=ev.linear.lrs, wds=ev.linear.wds,
            epochs=ev.linear.epochs, batch_size=ev.linear.batch_size, seed=seed, num_classes=num_outputs(tr),
            device=run.device, select_on=ev.select_on)
    # the trainer linear_probe uses: the same seed and params give the selected layer
    head = protocols.fit_linear_head(run.features(bb, flag, "train"), tr.labels, tr.task, params["lr"], params["wd"],
                                     ev.linear.epochs, ev.linear.batch_size, seed, num_outputs(tr), run.device)

    def feats_of(target: str, split: str) -> torch.Tensor:
        return run.features(bb, target, split)

    def logits_of(target: str) -> torch.Tensor:
        with torch.no_grad():
            return head(feats_of(target, "test").to(run.device)).float().cpu()

    return feats_of, logits_of


def _finetune_model(run, bb: Backbone, flag: str, seed: int) -> Scorers:
    """Features and logits of the network fine-tuned on 100 % of ``flag``'s labels with ``seed``."""
    path = run.finetune_path(bb, flag)
    want = run.record_hash(bb.entry, flag, "finetune", bb.pseed)
    state = feat.load_pt(path) if path.is_file() else None
    if not (isinstance(state, dict) and state.get("hash") == want):
        t0 = time.perf_counter()
        probs, extra = run.finetune(bb, flag, 1.0, seed, save=True)
        key = (flag, bb.entry.name, bb.pseed, "finetune", 1.0, seed)
        if key in run.book.plan["records"] and not run.done("records", key):
            run.add_record(bb, flag, "finetune", 1.0, seed, probs, extra, t0)
        state = feat.load_pt(path)
    model = bb.fresh(seed)
    model.load_state_dict(state["model"])
    head = nn.Linear(model.out_dim, num_outputs(run.data(flag, "train"))).to(run.device)
    head.load_state_dict(state["head"])
    precision = run.cfg.eval.finetune.precision
    cache: dict[tuple[str, str], tuple] = {}

    def forward(target: str, split: str):
        if (target, split) not in cache:
            images = adapt_channels(run.data(target, split).images, in_channels_of(model))
            cache[target, split] = feat.forward(model, images, run.device, precision, head)
        return cache[target, split]

    return (lambda target, split: forward(target, split)[0]), (lambda target: forward(target, "test")[1])
