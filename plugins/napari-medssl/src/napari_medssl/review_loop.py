"""Closing the loop on the phantoms: UMCT run -> pseudo-labels -> scripted review -> retrain.

``python -m napari_medssl.review_loop DATA OUT`` (``make review-loop``):

1. trains the UMCT recipe (``configs/umct/umct.yaml``) on DATA: the **before** run;
2. ``medssl pseudo-label`` of its best checkpoint on DATA's unlabeled images;
3. reviews them through the plugin's review API (:class:`~.session.ReviewSession`, the object
   behind the widget's buttons), scripted: the ``--edit`` least confident cases are corrected
   (the phantom's true label, regenerated from the dataset's seed, stands in for the expert's
   correction) and the ``--accept`` most confident ones accepted as they are; the rest stay
   pending. Every decision lands in the manifest and ``review_log.jsonl`` as a reviewer's would;
4. trains the same recipe again with ``data.extra_labels=OUT/pseudo_labels/manifest.json``:
   the **after** run (its ``reviewed_cases.json`` and ``metrics.json`` name the reviewed cases
   and label hashes it used);
5. writes ``OUT/review_loop.json`` and prints validation and test Dice before and after.

Both runs use the same recipe, seed, steps and validation split; the test split is read once per
run, as in every medssl run.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np

from .session import ReviewSession

RECIPE = Path(__file__).resolve().parents[4] / "configs" / "umct" / "umct.yaml"


def phantom_truth(dataset_seed: int, name: str, image_path: Path) -> np.ndarray:
    """The true label of unlabeled phantom ``name`` (``phantom_ul_<i>``), regenerated.

    Raises:
        ValueError: not a phantom name, or the regenerated image differs from ``image_path``
            (the dataset was made with another seed or shape).
    """
    from medssl.data.io import read_volume
    from medssl.data.phantoms import case_rng, make_phantom

    m = re.fullmatch(r"phantom_ul_(\d+)", name)
    if m is None:
        raise ValueError(f"{name!r} is not an unlabeled phantom case (phantom_ul_<i>)")
    image = read_volume(image_path)
    case = make_phantom(case_rng(dataset_seed, "unlabeled", int(m.group(1))), image.array.shape)
    if not np.array_equal(case.image.array, image.array):
        raise ValueError(f"{image_path}: regenerating {name} with seed {dataset_seed} gives another image; pass the "
                         "seed the dataset was made with (--dataset-seed)")
    return case.label.array.astype(np.uint8)


def scripted_review(export: Path, n_edit: int, n_accept: int, correct, reviewer: str = "scripted") -> dict:
    """Edit the ``n_edit`` least confident cases with ``correct(name, image_path) -> label`` and
    accept the ``n_accept`` most confident, through the review API; returns what was decided."""
    session = ReviewSession(export, reviewer=reviewer, preload=False)
    queue = session.queue("confidence")  # least confident first
    edit = queue[:n_edit]
    accept = [c for c in reversed(queue) if c not in edit][:n_accept]
    for case in edit:
        data = session.load(case.name)
        session.save_edit(case.name, correct(case.name, session.manifest.resolve(case.image)), geometry=data.image)
    for case in accept:
        session.load(case.name)
        session.accept(case.name)
    session.close()
    return {"edited": [c.name for c in edit], "accepted": [c.name for c in accept], "progress": session.progress()}


def _dice(metrics: dict, split: str):
    block = metrics.get(split) or {}
    return block.get("dice_mean")


def run_loop(data: Path, out: Path, overrides: list[str] = (), n_edit: int = 4, n_accept: int = 8,
             dataset_seed: int = 0, recipe: Path = RECIPE, mc_samples: int | None = None) -> dict:
    """The whole loop (module docstring); returns the summary also written to ``OUT/review_loop.json``."""
    from medssl.config import load_config
    from medssl.core.jsonfile import write_json
    from medssl.engines.train import run_training
    from medssl.inference.pseudo_label import export_pseudo_labels

    out.mkdir(parents=True, exist_ok=True)
    base = [f"data.root={data}", *overrides]
    t0 = time.time()
    before = run_training(load_config(recipe, base), out=out / "before", resume=(out / "before").is_dir())
    t_train = time.time() - t0
    export = out / "pseudo_labels"
    manifest = export_pseudo_labels(Path(before["best_checkpoint"]), data, export, split="unlabeled",
                                    mc_samples=mc_samples, progress=False)
    decided = scripted_review(export, n_edit, n_accept, lambda name, image: phantom_truth(dataset_seed, name, image))
    after = run_training(load_config(recipe, [*base, f"data.extra_labels={manifest}"]), out=out / "after",
                         resume=(out / "after").is_dir())
    summary = {
        "recipe": str(recipe), "overrides": list(overrides), "dataset": str(data), "review": decided,
        "reviewed_cases": after.get("reviewed"),
        "before": {"val_dice": _dice(before, "val"), "test_dice": _dice(before, "test"),
                   "n_train_cases": before["n_train_cases"], "run": str(out / "before")},
        "after": {"val_dice": _dice(after, "val"), "test_dice": _dice(after, "test"),
                  "n_train_cases": after["n_train_cases"], "run": str(out / "after")},
        "wall_time_s": round(time.time() - t0, 1), "train_time_before_s": round(t_train, 1),
    }
    write_json(out / "review_loop.json", summary)
    return summary


def format_summary(s: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    r = s["review"]
    return "\n".join([
        f"review: {len(r['edited'])} edited ({', '.join(r['edited'])}), {len(r['accepted'])} accepted; {r['progress']}",
        f"before: val Dice {f(s['before']['val_dice'])}, test Dice {f(s['before']['test_dice'])} "
        f"({s['before']['n_train_cases']} labeled training cases)",
        f"after:  val Dice {f(s['after']['val_dice'])}, test Dice {f(s['after']['test_dice'])} "
        f"({s['after']['n_train_cases']} labeled training cases incl. reviewed)",
    ])


def main(argv: list[str] | None = None) -> None:
    import typer

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def cli(data: Path, out: Path, edit: int = typer.Option(4, help="Least confident cases to correct."),
            accept: int = typer.Option(8, help="Most confident cases to accept."),
            dataset_seed: int = typer.Option(0, help="The seed `medssl sample-data` made DATA with."),
            set_: list[str] = typer.Option([], "--set", help="Recipe overrides for both runs, KEY=VALUE.")):
        summary = run_loop(data, out, set_, n_edit=edit, n_accept=accept, dataset_seed=dataset_seed)
        typer.echo(format_summary(summary))
        typer.echo(f"summary: {out / 'review_loop.json'}")

    app(argv if argv is not None else sys.argv[1:], standalone_mode=True)


if __name__ == "__main__":
    main()
