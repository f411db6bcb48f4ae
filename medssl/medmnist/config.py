"""Typed configuration of ``medssl eval medmnist``: YAML in, validated objects out.

The same rules as the segmentation configs (:mod:`medssl.config`): unknown keys are errors,
``base:`` inherits, ``--set`` overrides (keys inside a list by index or ``*``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from medssl.config import Strict, build_config, load_raw

#: SSL method names accepted by a pretraining entry (the keys of ``medssl.methods.image_ssl.SSL_METHODS``,
#: spelled out so that reading a config does not import torch; a test keeps the two in step),
#: plus ``"none"``: no pretraining, the entry's ``init`` weights are evaluated as they are.
MEDMNIST_SSL_METHODS = ("simclr", "mocov3", "byol", "simsiam", "dino", "barlow", "vicreg", "nnclr", "supervised")
#: augmentation presets a pretraining entry may name (the keys of
#: ``medssl.transforms.image_ssl_augment.PRESETS``, spelled out for the same reason; a test keeps them in step)
AUGMENT_PRESETS = ("simclr", "byol", "mocov3", "simsiam", "barlow", "vicreg", "nnclr", "dino", "light")


class MedMNISTPretrainEntry(Strict):
    """One way of obtaining a backbone; every entry is evaluated on every dataset of the run.

    ``method`` ``"none"`` evaluates the ``init`` weights without pretraining: ``init: random`` is the
    random-init baseline (and, with the ``finetune`` protocol and a name starting with
    ``supervised``, the supervised MedMNIST v2 baseline); ``checkpoint`` a local file (a medssl
    checkpoint or a foreign state dict); ``run`` another medssl pretraining run (its folder or
    checkpoint). Any other method pretrains from random weights on the train split (images only)
    of ``datasets``: by default the evaluated dataset itself (one pretraining per dataset, which is
    also what the transfer matrix uses), or one fixed list (several = multi-domain pretraining on
    their union, mixed 1/3 channels).

    Pretraining seeds: ``seeds`` (else the run's ``pretrain_seeds``, else ``[seed]``) pretrains the
    entry once per seed (for ``init: random`` without pretraining: one random initialisation per
    seed); every evaluation seed is run on every one of them, so the report can give the spread
    across pretrainings, not only across probes. Entries with fixed weights (``init: checkpoint`` /
    ``run``) have one set of weights and take no seed list.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", description="row name in tables and folder name")
    method: Literal[MEDMNIST_SSL_METHODS + ("none",)] = "simclr"  # type: ignore[valid-type]
    init: Literal["random", "checkpoint", "run"] = "random"
    checkpoint: Path | None = Field(None, description="init: checkpoint: the weights file")
    run: Path | None = Field(None, description="init: run: a medssl pretraining folder or its checkpoint")
    datasets: list[str] | None = Field(None, min_length=1, description="pretraining data; default the eval dataset")
    arch: Literal["resnet18", "resnet50", "vit_small"] = "resnet18"
    arch_kwargs: dict[str, Any] | None = Field(
        None,
        description="backbone keywords; default by image size (ResNet: small_input = side <= 32; "
        "{small_input: false} is the 7x7/2 + max-pool stem, ~30x cheaper on 28^3 volumes)",
    )
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float | None = Field(None, gt=0, description="default: the method's own")
    weight_decay: float | None = Field(None, ge=0)
    warmup_epochs: int = Field(10, ge=0)
    precision: Literal["32", "bf16"] = "bf16"
    seed: int = Field(0, description="the pretraining (or random-init) seed when neither seeds nor pretrain_seeds is set")
    seeds: list[int] | None = Field(None, min_length=1, description="pretraining seeds of this entry")
    method_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of the method")
    augment_preset: Literal[AUGMENT_PRESETS] | None = Field(  # type: ignore[valid-type]
        None, description="augmentation preset of the pretraining (medssl.transforms.image_ssl_augment.PRESETS); "
        "default: the method's own; one name for every entry = one shared augmentation"
    )

    @property
    def fixed_weights(self) -> bool:
        """Weights from a file: one set, no pretraining or initialisation seed."""
        return self.method == "none" and self.init != "random"

    @model_validator(mode="after")
    def _init_matches(self):
        if self.init == "checkpoint" and self.checkpoint is None:
            raise ValueError(f"pretrain entry {self.name!r}: init 'checkpoint' needs 'checkpoint: <file>'")
        if self.init == "run" and self.run is None:
            raise ValueError(f"pretrain entry {self.name!r}: init 'run' needs 'run: <folder or checkpoint>'")
        if self.checkpoint is not None and self.init != "checkpoint":
            raise ValueError(f"pretrain entry {self.name!r}: 'checkpoint' is set but init is {self.init!r}")
        if self.run is not None and self.init != "run":
            raise ValueError(f"pretrain entry {self.name!r}: 'run' is set but init is {self.init!r}")
        if self.method != "none" and self.init != "random":
            raise ValueError(
                f"pretrain entry {self.name!r}: pretraining ({self.method}) starts from random weights; "
                f"to evaluate existing weights use method 'none' with init {self.init!r}"
            )
        if self.method == "none" and self.datasets is not None:
            raise ValueError(f"pretrain entry {self.name!r}: 'datasets' needs a pretraining method, not 'none'")
        if self.method == "supervised" and self.datasets is not None and len(self.datasets) > 1:
            raise ValueError(f"pretrain entry {self.name!r}: supervised pretraining cannot mix label spaces")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"pretrain entry {self.name!r}: seeds has duplicates: {self.seeds}")
        if self.fixed_weights and self.seeds is not None and len(self.seeds) > 1:
            raise ValueError(f"pretrain entry {self.name!r}: init {self.init!r} loads one set of weights; "
                             f"several seeds would evaluate the same weights (remove 'seeds')")
        if self.augment_preset is not None and self.method == "none":
            raise ValueError(f"pretrain entry {self.name!r}: augment_preset needs a pretraining method")
        return self

    @field_validator("datasets")
    @classmethod
    def _flags(cls, v):
        return None if v is None else [_medmnist_flag(d) for d in v]


class MedMNISTLinearConfig(Strict):
    """Linear probe on frozen features: lr x wd grid chosen on validation AUROC."""

    lrs: list[float] = Field([1e-3, 1e-2, 1e-1], min_length=1)
    wds: list[float] = Field([0.0, 1e-4, 1e-2], min_length=1)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)


class MedMNISTKNNConfig(Strict):
    """Weighted kNN on frozen features: k x temperature chosen on validation AUROC.

    ``k`` always stays below the number of labeled samples (see :func:`medssl.medmnist.protocols.knn_k_grid`);
    ``vote: balanced`` divides each class's votes by its labeled count (``plain``: DINO's vote)."""

    ks: list[int] = Field([10, 20, 50, 100], min_length=1)
    temps: list[float] = Field([0.07, 0.1, 0.5], min_length=1)
    vote: Literal["balanced", "plain"] = "balanced"


class MedMNISTFinetuneConfig(Strict):
    """Full fine-tuning (AdamW, cosine to zero, best validation-AUROC epoch kept)."""

    epochs: int = Field(100, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=2)
    precision: Literal["32", "bf16"] = "bf16"
    augment: Literal["none", "light"] = Field("none", description="'light' = random crop 0.8-1 + flip")


class MedMNISTEvalSection(Strict):
    protocols: list[Literal["linear", "knn", "finetune"]] = Field(["linear", "knn", "finetune"], min_length=1)
    fractions: list[float] = Field([0.01, 0.1, 1.0], min_length=1, description="label fractions in (0, 1]")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="eval seeds: labeled subset and probe / "
                             "fine-tune seed; run on every pretraining seed")
    select_on: Literal["auroc", "acc"] = Field(
        "auroc", description="validation metric choosing the linear / kNN grid point and the fine-tuned epoch"
    )
    linear: MedMNISTLinearConfig = MedMNISTLinearConfig()
    knn: MedMNISTKNNConfig = MedMNISTKNNConfig()
    finetune: MedMNISTFinetuneConfig = MedMNISTFinetuneConfig()

    @model_validator(mode="after")
    def _check(self):
        bad = [f for f in self.fractions if not 0.0 < f <= 1.0]
        if bad:
            raise ValueError(f"fractions must be in (0, 1], got {bad}")
        for name in ("protocols", "fractions", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"eval.{name} has duplicates: {values}")
        return self


class MedMNISTOODConfig(Strict):
    """OOD detection: the model trained on dataset A scores A's test set against every other one's."""

    enabled: bool = True
    scores: list[Literal["msp", "energy", "mahalanobis"]] = Field(["msp", "energy", "mahalanobis"], min_length=1)
    model: Literal["linear", "finetune"] = Field(
        "linear", description="linear head (100 % labels, seed 0) on frozen features, or the fine-tuned model"
    )


class MedMNISTTransferConfig(Strict):
    """Cross-dataset transfer: backbone pretrained on A, linear probe on B, for all pairs."""

    enabled: bool = False
    fractions: list[float] = Field([1.0], min_length=1)

    @model_validator(mode="after")
    def _check(self):
        bad = [f for f in self.fractions if not 0.0 < f <= 1.0]
        if bad:
            raise ValueError(f"fractions must be in (0, 1], got {bad}")
        return self


class MedMNISTReportConfig(Strict):
    published: bool = Field(True, description="show the published MedMNIST v2 supervised numbers")
    baseline: str | None = Field(
        "auto",
        description="entry the paired per-seed AUROC tables compare against; auto: the first random-init "
        "entry without pretraining; null: no paired tables",
    )


def _medmnist_flag(flag: str) -> str:
    from medssl.medmnist.files import flag_info  # json only; no torch
    from medssl.errors import DataError

    try:
        flag_info(flag)
    except DataError as exc:
        raise ValueError(str(exc)) from None
    return str(flag).strip().lower()


class MedMNISTEvalConfig(Strict):
    """``medssl eval medmnist``: SSL pretraining + linear / kNN / fine-tune evaluation, OOD, transfer."""

    name: str = "medmnist-eval"
    datasets: list[str] = Field(min_length=1, description="MedMNIST flags evaluated, e.g. [breastmnist]")
    size: int = Field(28, description="image size of every dataset: 28, 64, 128, 224 (3D: 28, 64)")
    root: Path | list[Path] | None = Field(
        None, description="folder(s) of the .npz files, searched in order; default $MEDMNIST_ROOT (folders "
        "separated by os.pathsep), ~/.medmnist"
    )
    verify: bool = Field(True, description="check every file's md5 against the official table")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="evaluation device (auto: cuda if present)")
    pretrain: list[MedMNISTPretrainEntry] = Field(min_length=1)
    pretrain_seeds: list[int] | None = Field(
        None, min_length=1, description="pretraining seeds of every entry without its own 'seeds' (entries "
        "with fixed weights keep one); default: each entry's 'seed'"
    )
    eval: MedMNISTEvalSection = MedMNISTEvalSection()
    ood: MedMNISTOODConfig = MedMNISTOODConfig()
    transfer: MedMNISTTransferConfig = MedMNISTTransferConfig()
    report: MedMNISTReportConfig = MedMNISTReportConfig()

    @model_validator(mode="after")
    def _check(self):
        from medssl.medmnist.files import flag_info

        flags = self.datasets
        if len(set(flags)) != len(flags):
            raise ValueError(f"datasets has duplicates: {self.datasets}")
        if self.pretrain_seeds is not None and len(set(self.pretrain_seeds)) != len(self.pretrain_seeds):
            raise ValueError(f"pretrain_seeds has duplicates: {self.pretrain_seeds}")
        names = [p.name for p in self.pretrain]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"pretrain entry names must be unique; repeated: {dup}")
        if self.report.baseline not in (None, "auto", *names):
            raise ValueError(f"report.baseline {self.report.baseline!r} is not a pretrain entry; entries: {names}")
        for flag in flags + [d for p in self.pretrain for d in (p.datasets or [])]:
            if self.size not in flag_info(flag)["sizes"]:
                raise ValueError(f"{flag} has no size {self.size}; it exists in {flag_info(flag)['sizes']}")
        for p in self.pretrain:
            dims = {flag_info(d)["spatial_dims"] for d in p.datasets or []}
            if len(dims) > 1:
                raise ValueError(f"pretrain entry {p.name!r}: datasets mix 2D and 3D: {p.datasets}")
            wrong = [f for f in flags if dims and flag_info(f)["spatial_dims"] not in dims]
            if wrong:
                raise ValueError(f"pretrain entry {p.name!r} pretrains {dims.pop()}D but evaluates on {wrong}")
        return self

    @field_validator("datasets")
    @classmethod
    def _flags(cls, v):
        return [_medmnist_flag(d) for d in v]

    def seeds_of(self, entry: MedMNISTPretrainEntry) -> list[int]:
        """The pretraining seeds of ``entry``: its ``seeds``, else ``pretrain_seeds`` (not for fixed
        weights), else ``[seed]``."""
        if entry.seeds is not None:
            return list(entry.seeds)
        if self.pretrain_seeds is not None and not entry.fixed_weights:
            return list(self.pretrain_seeds)
        return [entry.seed]


def load_medmnist_eval_config(path: str | Path, overrides: list[str] | None = None) -> MedMNISTEvalConfig:
    """Read a ``medssl eval medmnist`` recipe, apply ``--set`` overrides, validate.

    Besides ``--set section.key=value``, keys inside a list are addressed by index or by ``*``
    for every element: ``--set pretrain.0.epochs=10``, ``--set 'pretrain.*.epochs=1'``.

    Raises:
        ConfigError: missing file, invalid YAML, an unknown key (named) or an invalid value.
    """
    return build_config(load_raw(Path(path), overrides), source=str(path), model=MedMNISTEvalConfig)  # type: ignore[return-value]
