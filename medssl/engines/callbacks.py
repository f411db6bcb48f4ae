"""Lightning callbacks: a JSON-lines metrics log that survives resumes, and a step progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class MetricsLog(pl.Callback):
    """Appends ``{"step", "loss", "lr"}`` every ``every`` steps and each validation's metrics to
    ``metrics.jsonl``. On resume, lines after the checkpoint's step are dropped, so the log reads
    as if the run had never been interrupted."""

    def __init__(self, path: Path, every: int = 10):
        self.path = Path(path)
        self.every = every
        self.t0 = time.time()

    def _write(self, trainer: pl.Trainer, record: dict) -> None:
        if trainer.is_global_zero:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def on_train_start(self, trainer, pl_module) -> None:  # after a checkpoint is restored
        if not trainer.is_global_zero or not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= trainer.global_step]
        self.path.write_text("".join(k + "\n" for k in keep))

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


class StepProgressBar(TQDMProgressBar):
    """One training bar over all ``max_steps`` (not one per epoch), starting where a resumed run
    left off, with the loss and the last validation Dice beside it."""

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
