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


class Strict(BaseModel):
    """Base of every typed config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    """Where the dataset is and how patches are drawn from it."""

    root: Path = Field(Path("sample_data/phantoms"), description="dataset folder (medssl format)")
    cache_dir: Path | None = Field(
        None, description="volume cache; default $MEDSSL_CACHE/volumes/<dataset>-<hash> (never inside the dataset)"
    )
    patch_size: tuple[int, int, int] = (64, 64, 32)
    batch_size: int = Field(2, ge=1)
    fg_fraction: float = Field(0.67, ge=0.0, le=1.0, description="share of patches centred on foreground")
    intensity: Literal["zscore", "ct", "auto"] | list[Literal["zscore", "ct"]] = Field(
        "zscore", description="intensity normalisation: one mode for every channel, 'auto' (the CT window for "
        "channels named CT, z-score for the others) or a list with one mode per channel")
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    channels: list[int] | None = Field(
        None, description="train on these input channels only (numbers of dataset.json's channel_names, in the "
        "order given), e.g. [0] to measure what the other sequences add; default: all")
    plan: Literal["none", "auto"] | Path = Field(
        "none", description="preprocessing plan (medssl.data.plan): 'none' trains on each file's own voxel grid; "
        "'auto' reorients to LPS and resamples to a target spacing made from the training cases (written to "
        "the run folder's plan.json and stored in the checkpoint); or a plan.json path (`medssl data plan`)")
    plan_isotropic: bool = Field(True, description="with plan auto: isotropic target spacing (geometric mean of the "
                                 "median spacing; UMCT's views need it) instead of the median spacing")
    plan_spacing: tuple[float, float, float] | None = Field(None, description="with plan auto: this target spacing (mm)")
    resample_channels: bool = Field(
        False, description="resample a channel on another grid than channel 0 onto channel 0's (with a warning) "
        "instead of refusing the case")
    num_workers: int = Field(0, ge=0)
    num_labeled: int | None = Field(None, ge=1, description="use only N labeled cases (the first N, see labeled_seed)")
    labeled_seed: int | None = Field(
        None, description="with num_labeled: draw the N labeled cases at random with this seed instead of the first N"
    )
    num_val: int | None = Field(
        None, ge=1,
        description="hold out N labeled cases of imagesTr/ for validation (checkpoint selection), drawn with "
        "split_seed; default: imagesVal/ when the dataset has it, else 20% of imagesTr/ (at least 1)",
    )
    split_seed: int = Field(
        0, description="seed of the validation draw from imagesTr/: keep it fixed across the runs of an "
        "experiment so that they share one validation set",
    )
    unlabeled_from_train: bool = Field(
        False, description="the imagesTr/ cases not drawn by num_labeled join the unlabeled cases (labels dropped)"
    )
    extra_labels: Path | None = Field(
        None, description="reviewed pseudo-label manifest: its accepted/edited cases join the labeled set"
    )


class ModelConfig(Strict):
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


class OptimConfig(Strict):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    scheduler: Literal["cosine", "poly", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)


class TrainerConfig(Strict):
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


class ValConfig(Strict):
    roi_size: tuple[int, int, int] | None = Field(None, description="sliding-window ROI; default patch_size")
    sw_batch_size: int = Field(2, ge=1)
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    split: Literal["val"] = Field(
        "val", description="validation (checkpoint selection) always runs on the val split; the test split is "
        "evaluated once, after training, with the selected checkpoint"
    )
    max_cases: int | None = Field(None, ge=1)

    @field_validator("split", mode="before")
    @classmethod
    def _never_test(cls, v):
        if v in ("test", "train"):
            raise ValueError(
                f"validation on the {v} split is not allowed: checkpoints are selected on the val split "
                "(imagesVal/, or data.num_val cases held out of imagesTr/) and the test split is evaluated once at "
                "the end into metrics.json; remove val.split from the recipe"
            )
        return v


class UMCTConfig(Strict):
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
    confidence_weighting: bool = Field(
        True, description="scale each unlabeled sample's loss by its confidence (medssl's addition; the paper: false)"
    )
    view_reduction: Literal["mean", "sum"] = Field(
        "mean", description="losses over views: mean (medssl; scale independent of N) or sum (the paper, Eqs. 2-3)"
    )
    init_2d: Path | None = Field(None, description="2D twin checkpoint for the in-plane kernels")


class ContrastiveConfig(Strict):
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
    # medssl's defaults; the official code's choices (configs/hippocampus/contrastive_paper_*.yaml) in brackets
    augment: Literal["medssl", "official"] = Field(
        "medssl", description="medssl: random resized crop of 60-100% of the area + contrast/brightness/noise; "
        "official: fixed crop of 27% of the area (100 of 192 px) + brightness then contrast [official]"
    )
    keep_original_view: bool = Field(
        False, description="global stage: one copy of every image stays unaugmented (the official G^D batch) [true]"
    )
    global_head: Literal["pool", "flatten"] = Field(
        "pool", description="g1 input: pool = global average of the bottleneck; flatten = the whole bottleneck "
        "flattened (official; needs a fixed patch size) [flatten]"
    )
    local_negatives: Literal["all", "neighbours"] = Field(
        "all", description="local negatives: all other regions, or the 5 neighbouring regions of the official "
        "code (2D) [neighbours]"
    )
    region_grid: Literal["fit", "official"] = Field(
        "fit", description="region positions: fit = last region at the border; official = m = L - 4 for 3x3 [official]"
    )
    region_proj_dim: int | None = Field(
        None, ge=1, description="per-region linear projection of the flattened local regions (official: 128) [128]"
    )

    @model_validator(mode="after")
    def _regions(self):
        allowed = {2: (9, 13), 3: (27, 35)}[self.spatial_dims]
        if self.num_regions is not None and self.num_regions not in allowed:
            raise ValueError(f"contrastive.num_regions must be one of {allowed} in {self.spatial_dims}D, got {self.num_regions}")
        if self.local_negatives == "neighbours" and self.spatial_dims != 2:
            raise ValueError("contrastive.local_negatives=neighbours is defined (by the official code) for 2D only")
        return self


class RunConfig(Strict):
    """One training run: a method plus data, model, optimiser, trainer and validation settings."""

    method: str = Field("supervised", description="a name registered in medssl.methods.METHODS")
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

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        from medssl.methods import METHODS  # a dict of strings: no torch import

        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}; available: {sorted(METHODS)}")
        return v


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


def _parse_value(value: str):
    import yaml

    try:
        return yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError:
        return value


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Apply ``key.sub=value`` strings to a raw config dict (values parsed as YAML).

    Keys inside a list are addressed by index or by ``*`` for every element:
    ``--set pretrain.0.epochs=10``, ``--set 'pretrain.*.epochs=1'``. Missing sections are
    created; the input dict is not modified.

    Raises:
        ConfigError: an item without ``=``, or a key that does not fit the config's structure.
    """
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key.sub=value, got {item!r}")
        parsed = _parse_value(value)
        parts = key.strip().split(".")
        nodes = [raw]
        for depth, p in enumerate(parts[:-1]):
            index = p == "*" or p.isdigit()
            nxt = []
            for node in nodes:
                if isinstance(node, list) and index:
                    if p.isdigit() and int(p) >= len(node):
                        raise ConfigError(f"--set {key}: index {p} is past the end of a list of {len(node)}")
                    nxt += node if p == "*" else [node[int(p)]]
                elif isinstance(node, dict) and not index:
                    child = node.get(p)
                    if child is None:
                        nxt_index = parts[depth + 1] == "*" or parts[depth + 1].isdigit()
                        child = node[p] = [] if nxt_index else {}
                    elif not isinstance(child, (dict, list)):
                        raise ConfigError(f"--set {key}: {p!r} is not a section")
                    nxt.append(child)
                else:
                    raise ConfigError(f"--set {key}: {p!r} does not match the config's structure")
            nodes = nxt
        for node in nodes:
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {parts[-2]!r} is not a section")
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


def load_raw(path: str | Path | None, overrides: list[str] | None = None) -> dict:
    """A YAML recipe (with its ``base`` chain) as a dict, ``--set`` overrides applied."""
    raw = _load_yaml(Path(path)) if path is not None else {}
    return apply_overrides(raw, overrides)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a segmentation recipe (or defaults when ``path`` is None), apply ``--set`` overrides,
    validate. (The MedMNIST benchmark's recipes: :func:`medssl.medmnist.config.load_medmnist_eval_config`.)"""
    return build_config(load_raw(path, overrides), source=str(path) if path else "config")  # type: ignore[return-value]


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (written into every run folder)."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def get_by_path(obj: Any, key: str) -> Any:
    for p in key.split("."):
        obj = getattr(obj, p)
    return obj
