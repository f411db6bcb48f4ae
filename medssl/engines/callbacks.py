"""Lightning callbacks: a JSON-lines metrics log that survives resumes, a guard against a
diverged loss, and progress (a bar on a terminal, plain periodic lines in a log file)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

from medssl.core.jsonfile import dumps_finite
from medssl.errors import TrainingDiverged


class MetricsLog(pl.Callback):
    """Appends ``{"step", "loss", "lr"}`` every ``every`` steps and each validation's metrics to
    ``metrics.jsonl``. On resume, lines after the checkpoint's step are dropped, so the log reads
    as if the run had never been interrupted. Non-finite numbers are written as ``null`` and named
    under ``"nonfinite"`` (every line is valid JSON)."""

    def __init__(self, path: Path, every: int = 10):
        self.path = Path(path)
        self.every = every
        self.t0 = time.time()

    def _write(self, trainer: pl.Trainer, record: dict) -> None:
        if trainer.is_global_zero:
            with self.path.open("a") as f:
                f.write(dumps_finite(record) + "\n")

    def on_train_start(self, trainer, pl_module) -> None:  # after a checkpoint is restored
        if not trainer.is_global_zero or not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= trainer.global_step]
        from medssl.core.atomic import write_atomic_text

        write_atomic_text(self.path, "".join(k + "\n" for k in keep))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 and outputs is not None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            extra = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/") and k != "train/loss"}
            self._write(trainer, {"step": step, "loss": float(loss), "lr": lr, **extra, "time_s": round(time.time() - self.t0, 2)})

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self._write(trainer, {**getattr(pl_module, "last_val_metrics", {}), "time_s": round(time.time() - self.t0, 2)})


class DivergenceGuard(pl.Callback):
    """Stops a run whose loss became NaN or infinite (:class:`~medssl.errors.TrainingDiverged`):
    its weights are no longer usable, and every later step would only overwrite good checkpoints."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"the training loss is {float(loss)} at step {trainer.global_step}: the run stopped (its checkpoints "
                "are from before); lower optim.lr, use trainer.precision=32, or check the data with `medssl data check`"
            )


class PlainProgress(pl.Callback):
    """Progress for logs (stderr is not a terminal): one plain line about every 5% of the steps,
    no carriage returns or escape codes."""

    def __init__(self, every: int | None = None):
        self.every, self.t0 = every, time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero:
            return
        step, total = trainer.global_step, trainer.max_steps
        every = self.every or max(1, total // 20)
        if step % every and step != total:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        val = getattr(pl_module, "last_val_metrics", {}).get("val/dice_mean")
        val_txt = "" if val is None else f", last val Dice {val:.3f}"
        print(f"step {step}/{total}: loss {float(loss):.4f}{val_txt}, {time.time() - self.t0:.0f} s",
              file=sys.stderr, flush=True)


class StepProgressBar(TQDMProgressBar):
    """One training bar over all ``max_steps`` (not one per epoch), on stderr, starting where a
    resumed run left off, with the loss and the last validation Dice beside it."""

    def _bar(self, desc: str, position: int, leave: bool) -> Tqdm:
        return Tqdm(desc=desc, position=position, disable=self.is_disabled, leave=leave, dynamic_ncols=True,
                    file=sys.stderr, smoothing=0, bar_format=self.BAR_FORMAT)

    def init_train_tqdm(self) -> Tqdm:
        return self._bar(self.train_description, 2 * self.process_position, True)

    def init_validation_tqdm(self) -> Tqdm:
        has_main_bar = self.trainer.state.fn != "validate"
        return self._bar(self.validation_description, 2 * self.process_position + has_main_bar, not has_main_bar)

    def init_test_tqdm(self) -> Tqdm:
        return self._bar("test", 2 * self.process_position, True)

    def on_train_epoch_start(self, trainer, *_) -> None:
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:
            bar.reset(total=trainer.max_steps)
            bar.n = trainer.global_step
            bar.refresh()
        bar.set_description("train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = trainer.global_step
        if self._should_update(n, trainer.max_steps):
            self.train_progress_bar.n = n
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
            self.train_progress_bar.refresh()

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
