"""Typed run configuration: YAML in, validated objects out.

Only the CLI and the engines see these objects; library classes (networks, losses, datasets)
take plain keyword arguments. Validation uses pydantic with ``extra="forbid"`` so that a typo in
a key is an error naming the key rather than a silently ignored setting.

A config file may name a base recipe with ``base: other.yaml`` (relative to itself); keys of
the file override the base's, recursively. ``--set a.b=value`` overrides are applied last, with
``value`` parsed as YAML (so ``--set trainer.max_steps=10`` gives an int, ``[64,64,32]`` a list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medssl.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the dataset is and how patches are drawn from it."""

    root: Path = Field(Path("sample_data/phantoms"), description="dataset folder (medssl format)")
    cache_dir: Path | None = Field(None, description="volume cache; default <root>/.medssl_cache")
    patch_size: tuple[int, int, int] = (64, 64, 32)
    batch_size: int = Field(2, ge=1)
    fg_fraction: float = Field(0.67, ge=0.0, le=1.0, description="share of patches centred on foreground")
    intensity: Literal["zscore", "ct"] = "zscore"
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    num_workers: int = Field(0, ge=0)
    num_labeled: int | None = Field(None, ge=1, description="use only N labeled cases (the first N, see labeled_seed)")
    labeled_seed: int | None = Field(
        None, description="with num_labeled: draw the N labeled cases at random with this seed instead of the first N"
    )
    extra_labels: Path | None = Field(
        None, description="reviewed pseudo-label manifest: its accepted/edited cases join the labeled set"
    )


class ModelConfig(_Strict):
    name: Literal["unet", "multiview_asym_unet"] = "unet"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm: Literal["instance", "batch"] = "instance"

    @model_validator(mode="after")
    def _strides_match(self):
        # checked on the whole object (defaults included), so a dumped config always reloads
        if self.name == "unet" and len(self.strides) != len(self.channels) - 1:
            raise ValueError(f"model.strides needs len(channels)-1 = {len(self.channels) - 1} values, got {len(self.strides)}")
        return self


class OptimConfig(_Strict):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    scheduler: Literal["cosine", "poly", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)


class TrainerConfig(_Strict):
    max_steps: int = Field(400, ge=1)
    val_every: int = Field(100, ge=1, description="validate and checkpoint every N steps")
    precision: Literal["32", "bf16"] = "32"
    accelerator: Literal["cpu", "gpu", "auto"] = "cpu"
    devices: int = Field(1, ge=1)
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    seed: int = 0
    log_every: int = Field(10, ge=1)
    progress: bool = True
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: all cores")


class ValConfig(_Strict):
    roi_size: tuple[int, int, int] | None = Field(None, description="sliding-window ROI; default patch_size")
    sw_batch_size: int = Field(2, ge=1)
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    split: Literal["test", "train"] = "test"
    max_cases: int | None = Field(None, ge=1)


class UMCTConfig(_Strict):
    """Uncertainty-aware multi-view co-training (Xia et al., WACV 2020)."""

    num_views: Literal[1, 3, 6] = Field(3, description="1 = single-view supervised baseline")
    fusion: Literal["uncertainty", "average"] = Field("uncertainty", description="'average' = ablation")
    uncertainty: Literal["entropy", "variance"] = "entropy"
    mc_samples: int = Field(4, ge=1, description="MC-dropout passes per view on unlabeled patches")
    floor: float = Field(0.05, gt=0, description="uncertainty floor in the inverse-uncertainty weights")
    lambda_max: float = Field(1.0, ge=0)
    rampup_steps: int = Field(200, ge=0, description="sigmoid ramp-up of lambda after stage 1")
    stage1_steps: int = Field(200, ge=0, description="supervised-only steps before co-training starts")
    cotrain_loss: Literal["ce", "dice_ce"] = "ce"
    confidence_weighting: bool = Field(True, description="scale each unlabeled sample's loss by its confidence")
    init_2d: Path | None = Field(None, description="2D twin checkpoint for the in-plane kernels")


class ContrastiveConfig(_Strict):
    """Global / local contrastive pretraining (Chaitanya et al., NeurIPS 2020), one stage per run.

    Stage ``global`` trains the encoder (+ projection head g1) with the global loss on images drawn
    one per partition per volume; stage ``local`` freezes the encoder and trains the first
    ``decoder_blocks`` decoder stages (+ 1x1 head g2) with the local loss. A batch holds
    ``num_volumes x num_partitions`` images (2D slices or 3D patches of ``data.patch_size``).
    """

    stage: Literal["global", "local"] = "global"
    spatial_dims: Literal[2, 3] = Field(2, description="2 = axial slices (as the paper), 3 = patches")
    global_loss: Literal["GR", "GD-", "GD"] = "GD"
    local_loss: Literal["LR", "LD"] = "LD"
    temperature: float = Field(0.1, gt=0)
    num_partitions: int = Field(4, ge=1, description="partitions per volume along the slice axis")
    num_volumes: int = Field(4, ge=1, description="volumes per batch (batch = num_volumes x num_partitions)")
    decoder_blocks: int = Field(2, ge=1, description="decoder stages trained by the local loss")
    num_regions: int | None = Field(
        None, ge=1, description="local regions per feature map (2D: 9 or 13, default 13; 3D: 27 or 35, default 35)"
    )
    region_size: int = Field(3, ge=1, description="side of a local region in feature pixels")
    proj_dim: int = Field(128, ge=1)
    proj_hidden: int = Field(1024, ge=1)
    augment_strength: float = Field(1.0, ge=0, description="scales the augmentation ranges (0 = none)")

    @model_validator(mode="after")
    def _regions(self):
        allowed = {2: (9, 13), 3: (27, 35)}[self.spatial_dims]
        if self.num_regions is not None and self.num_regions not in allowed:
            raise ValueError(f"contrastive.num_regions must be one of {allowed} in {self.spatial_dims}D, got {self.num_regions}")
        return self


class RunConfig(_Strict):
    """One training run: a method plus data, model, optimiser, trainer and validation settings."""

    method: Literal["supervised", "umct", "contrastive"] = "supervised"
    name: str = "run"
    init_from: Path | None = Field(None, description="checkpoint whose matching weights initialise the model")
    init_parts: list[str] | None = Field(
        None,
        description="parameter-name prefixes taken from init_from (e.g. [encoder]); default: the parts "
        "the checkpoint's run trained (a contrastive stage records them), else every matching tensor",
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig()
    val: ValConfig = ValConfig()
    umct: UMCTConfig = UMCTConfig()
    contrastive: ContrastiveConfig = ContrastiveConfig()


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path)
    if path.resolve() in seen:
        raise ConfigError("config 'base' chain loops back to this file", path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"is not valid YAML: {exc}", path) from exc
    if not isinstance(raw, dict):
        raise ConfigError("must be a YAML mapping of keys to values", path)
    base = raw.pop("base", None)
    if base is not None:
        raw = _deep_merge(_load_yaml(path.parent / base, seen + (path.resolve(),)), raw)
    return raw


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.sub=value`` strings to a raw config dict (values parsed as YAML)."""
    import yaml

    raw = dict(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key.sub=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError:
            parsed = value
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise ConfigError(f"--set {key}: {p!r} is not a section")
            node[p] = dict(node.get(p, {}))
            node = node[p]
        node[parts[-1]] = parsed
    return raw


def _format_validation_error(exc: ValidationError, source: str) -> str:
    msgs = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            msgs.append(f"unknown key '{key}'")
        else:
            msgs.append(f"'{key}': {err['msg']}")
    return f"{source}: " + "; ".join(msgs)


def build_config(raw: dict, source: str = "config", model: type[BaseModel] = RunConfig) -> BaseModel:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML recipe (or defaults when ``path`` is None), apply ``--set`` overrides, validate."""
    raw = _load_yaml(Path(path)) if path is not None else {}
    raw = apply_overrides(raw, overrides)
    cfg = build_config(raw, source=str(path) if path else "config")
    return cfg  # type: ignore[return-value]


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (written into every run folder)."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def get_by_path(obj: Any, key: str) -> Any:
    for p in key.split("."):
        obj = getattr(obj, p)
    return obj


# ------------------------------------------------------------------ MedMNIST SSL evaluation
#: SSL method names accepted by a pretraining entry (the keys of ``medssl.methods.ssl.SSL_METHODS``,
#: spelled out so that reading a config does not import torch; a test keeps the two in step),
#: plus ``"none"``: no pretraining, the entry's ``init`` weights are evaluated as they are.
MEDMNIST_SSL_METHODS = ("simclr", "mocov3", "byol", "simsiam", "dino", "barlow", "vicreg", "nnclr", "supervised")


class MedMNISTPretrainEntry(_Strict):
    """One way of obtaining a backbone; every entry is evaluated on every dataset of the run.

    ``method`` ``"none"`` evaluates the ``init`` weights without pretraining: ``init: random`` is the
    random-init baseline (and, with the ``finetune`` protocol and a name starting with
    ``supervised``, the supervised MedMNIST v2 baseline); ``checkpoint`` a local file (a medssl
    checkpoint or a foreign state dict); ``run`` another medssl pretraining run (its folder or
    checkpoint). Any other method pretrains from random weights on the train split (images only)
    of ``datasets``: by default the evaluated dataset itself (one pretraining per dataset, which is
    also what the transfer matrix uses), or one fixed list (several = multi-domain pretraining on
    their union, mixed 1/3 channels).
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
    seed: int = 0
    method_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of the method")

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
        return self

    @field_validator("datasets")
    @classmethod
    def _flags(cls, v):
        return None if v is None else [_medmnist_flag(d) for d in v]


class MedMNISTLinearConfig(_Strict):
    """Linear probe on frozen features: lr x wd grid chosen on validation AUROC."""

    lrs: list[float] = Field([1e-3, 1e-2, 1e-1], min_length=1)
    wds: list[float] = Field([0.0, 1e-4, 1e-2], min_length=1)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)


class MedMNISTKNNConfig(_Strict):
    """Weighted kNN on frozen features: k x temperature chosen on validation AUROC."""

    ks: list[int] = Field([10, 20, 50, 100], min_length=1)
    temps: list[float] = Field([0.07, 0.1, 0.5], min_length=1)


class MedMNISTFinetuneConfig(_Strict):
    """Full fine-tuning (AdamW, cosine to zero, best validation-AUROC epoch kept)."""

    epochs: int = Field(100, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=2)
    precision: Literal["32", "bf16"] = "bf16"
    augment: Literal["none", "light"] = Field("none", description="'light' = random crop 0.8-1 + flip")


class MedMNISTEvalSection(_Strict):
    protocols: list[Literal["linear", "knn", "finetune"]] = Field(["linear", "knn", "finetune"], min_length=1)
    fractions: list[float] = Field([0.01, 0.1, 1.0], min_length=1, description="label fractions in (0, 1]")
    seeds: list[int] = Field([0, 1, 2], min_length=1)
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


class MedMNISTOODConfig(_Strict):
    """OOD detection: the model trained on dataset A scores A's test set against every other one's."""

    enabled: bool = True
    scores: list[Literal["msp", "energy", "mahalanobis"]] = Field(["msp", "energy", "mahalanobis"], min_length=1)
    model: Literal["linear", "finetune"] = Field(
        "linear", description="linear head (100 % labels, seed 0) on frozen features, or the fine-tuned model"
    )


class MedMNISTTransferConfig(_Strict):
    """Cross-dataset transfer: backbone pretrained on A, linear probe on B, for all pairs."""

    enabled: bool = False
    fractions: list[float] = Field([1.0], min_length=1)

    @model_validator(mode="after")
    def _check(self):
        bad = [f for f in self.fractions if not 0.0 < f <= 1.0]
        if bad:
            raise ValueError(f"fractions must be in (0, 1], got {bad}")
        return self


class MedMNISTReportConfig(_Strict):
    published: bool = Field(True, description="show the published MedMNIST v2 supervised numbers")
    baseline: str | None = Field(
        "auto",
        description="entry the paired per-seed AUROC tables compare against; auto: the first random-init "
        "entry without pretraining; null: no paired tables",
    )


def _medmnist_flag(flag: str) -> str:
    from medssl.data.medmnist import flag_info  # numpy + json only; no torch
    from medssl.errors import DataError

    try:
        flag_info(flag)
    except DataError as exc:
        raise ValueError(str(exc)) from None
    return str(flag).strip().lower()


class MedMNISTEvalConfig(_Strict):
    """``medssl eval medmnist``: SSL pretraining + linear / kNN / fine-tune evaluation, OOD, transfer."""

    name: str = "medmnist-eval"
    datasets: list[str] = Field(min_length=1, description="MedMNIST flags evaluated, e.g. [breastmnist]")
    size: int = Field(28, description="image size of every dataset: 28, 64, 128, 224 (3D: 28, 64)")
    root: Path | None = Field(None, description="folder of the .npz files; default $MEDMNIST_ROOT, ~/.medmnist")
    verify: bool = Field(True, description="check every file's md5 against the official table")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="evaluation device (auto: cuda if present)")
    pretrain: list[MedMNISTPretrainEntry] = Field(min_length=1)
    eval: MedMNISTEvalSection = MedMNISTEvalSection()
    ood: MedMNISTOODConfig = MedMNISTOODConfig()
    transfer: MedMNISTTransferConfig = MedMNISTTransferConfig()
    report: MedMNISTReportConfig = MedMNISTReportConfig()

    @model_validator(mode="after")
    def _check(self):
        from medssl.data.medmnist import flag_info

        flags = self.datasets
        if len(set(flags)) != len(flags):
            raise ValueError(f"datasets has duplicates: {self.datasets}")
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


def _apply_list_overrides(raw: dict, overrides: list[str] | None) -> tuple[dict, list[str]]:
    """Apply the ``--set`` items whose key passes through a list (``pretrain.0.epochs=5``, or
    ``pretrain.*.epochs=5`` for every entry); return the other items for :func:`apply_overrides`."""
    import copy

    import yaml

    raw, rest = copy.deepcopy(raw), []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not any(p == "*" or p.isdigit() for p in parts):
            rest.append(item)
            continue
        try:
            parsed = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError:
            parsed = value
        nodes = [raw]
        for depth, p in enumerate(parts[:-1]):
            nxt = []
            for node in nodes:
                if isinstance(node, list) and (p == "*" or p.isdigit()):
                    if p.isdigit() and int(p) >= len(node):
                        raise ConfigError(f"--set {key}: index {p} is past the end of a list of {len(node)}")
                    nxt += node if p == "*" else [node[int(p)]]
                elif isinstance(node, dict) and not (p == "*" or p.isdigit()):
                    child = node.setdefault(p, [] if parts[depth + 1] in ("*",) or parts[depth + 1].isdigit() else {})
                    nxt.append(child)
                else:
                    raise ConfigError(f"--set {key}: {p!r} does not match the config's structure")
            nodes = nxt
        for node in nodes:
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {parts[-2]!r} is not a section")
            node[parts[-1]] = parsed
    return raw, rest


def load_medmnist_eval_config(path: str | Path, overrides: list[str] | None = None) -> MedMNISTEvalConfig:
    """Read a ``medssl eval medmnist`` recipe, apply ``--set`` overrides, validate.

    Besides ``--set section.key=value``, keys inside a list are addressed by index or by ``*``
    for every element: ``--set pretrain.0.epochs=10``, ``--set 'pretrain.*.epochs=1'``.

    Raises:
        ConfigError: missing file, invalid YAML, an unknown key (named) or an invalid value.
    """
    raw = _load_yaml(Path(path))
    raw, rest = _apply_list_overrides(raw, overrides)
    raw = apply_overrides(raw, rest)
    return build_config(raw, source=str(path), model=MedMNISTEvalConfig)  # type: ignore[return-value]
