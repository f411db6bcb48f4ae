"""Sharding `medssl infer` over the processes of a launch: two CPU processes with RANK /
WORLD_SIZE set (as torchrun sets them; no process group needed) do every case exactly once,
each writes its own tables, and the merged summary.csv lists every case once."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_two_ranks_do_every_case_exactly_once(tiny_model, tmp_path: Path):
    ckpt, data = tiny_model
    folder = tmp_path / "in"
    folder.mkdir()
    files = sorted((data / "imagesUnlabeled").glob("*.nii.gz")) + sorted((data / "imagesTs").glob("*.nii.gz"))
    for p in files:
        shutil.copy(p, folder / p.name)
    names = sorted(p.name[: -len("_0000.nii.gz")] for p in files)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "medssl.cli", "infer", "--checkpoint", str(ckpt), "--input", str(folder),
           "--output", str(out), "--no-progress"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(r), "WORLD_SIZE": "2"})
             for r in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert "rank 0/2: 2 case(s): 2 predicted" in results[0][0] and "rank 1/2: 2 case(s): 2 predicted" in results[1][0]

    done = {}
    for r in range(2):
        for row in csv.DictReader(open(out / f"summary.rank{r}.csv")):
            assert row["status"] == "done"
            assert row["case"] not in done, f"{row['case']} done by two ranks"
            done[row["case"]] = r
    assert sorted(done) == names
    for i, name in enumerate(names):  # rank r takes cases[r::2] of the sorted list
        rec = json.loads((out / f"{name}.json").read_text())
        assert rec["rank"] == done[name] == i % 2 and rec["world_size"] == 2
    merged = [row["case"] for row in csv.DictReader(open(out / "summary.csv"))]
    assert sorted(merged) == names
    assert not (out / "errors.csv").exists()
