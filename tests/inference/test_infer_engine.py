"""The batch loop itself, with a stand-in predictor and cases (no model): the next case is read
while the current one is predicted, and the previous one written; a fault in any step of a case
becomes one errors.csv line and the loop goes on (``debug`` lets an unexpected one propagate)."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import numpy as np
import pytest

from medssl.inference.infer import run_cases
from medssl.inference.inputs import LoadedCase


class _Case:
    def __init__(self, name: str, events: list, read_started: dict):
        self.name, self.display, self.error, self.is_dicom = name, f"in/{name}", None, False
        self.events, self.read_started = events, read_started

    def sha256(self) -> str:
        return "0" * 64

    def scrub(self, text: str) -> str:
        return text

    def read(self) -> LoadedCase:
        self.events.append(("read", self.name, threading.current_thread().name))
        self.read_started[self.name].set()
        if self.name == "bad_read":
            raise ValueError("not a volume")
        return LoadedCase([np.zeros((2, 2, 2))])


class _Predictor:
    def __init__(self, events: list, read_started: dict, order: list[str]):
        self.events, self.read_started, self.order = events, read_started, order

    def predict_volume(self, volumes, seed=None, keep_probabilities=False):
        self.events.append(("predict", seed, threading.current_thread().name))
        i = self.order.index(seed)
        if i + 1 < len(self.order):  # the next case's read must start while this one computes
            assert self.read_started[self.order[i + 1]].wait(10), f"{self.order[i + 1]} was not read ahead"
        if seed == "bad_predict":
            raise RuntimeError("boom")
        return seed


class _Writer:
    keep_probabilities = False

    def __init__(self, events: list):
        self.events = events

    def finished(self, case, sha):
        return None

    def write(self, case, loaded, pred, sha, timings, extra):
        self.events.append(("write", case.name, threading.current_thread().name))
        if case.name == "bad_write":
            raise OSError(28, "No space left on device", f"out/{case.name}.nii.gz")
        return {"case": case.name, "input": {"display": case.display}, "timings_s": {"total": 1.0}}


def _run(tmp_path: Path, names: list[str], debug: bool = False):
    events, started = [], {n: threading.Event() for n in names}
    cases = [_Case(n, events, started) for n in names]
    res = run_cases(_Predictor(events, started, names), cases, tmp_path, _Writer(events), progress=False, debug=debug)
    return res, events


def test_read_ahead_write_behind_and_faults_per_case(tmp_path: Path):
    names = ["a", "bad_read", "b", "bad_predict", "bad_write", "c"]
    res, events = _run(tmp_path, names)
    assert res.done == ["a", "b", "c"] and not res.ok
    assert [f[0] for f in res.failed] == ["bad_read", "bad_predict", "bad_write"]
    reasons = {f[0]: f[2] for f in res.failed}
    assert reasons["bad_read"] == "ValueError: not a volume" and reasons["bad_predict"] == "RuntimeError: boom"
    assert reasons["bad_write"] == "out/bad_write.nii.gz: no space left on device"
    threads = {kind: {t for k, _, t in events if k == kind} for kind in ("read", "predict", "write")}
    assert all(t.startswith("medssl-read") for t in threads["read"])
    assert all(t.startswith("medssl-write") for t in threads["write"])
    assert threads["predict"] == {threading.current_thread().name}
    errors = list(csv.DictReader(open(tmp_path / "errors.csv")))
    assert [(e["case"], e["input"]) for e in errors] == [("bad_read", "in/bad_read"), ("bad_predict", "in/bad_predict"),
                                                         ("bad_write", "in/bad_write")]
    statuses = [(r["case"], r["status"]) for r in csv.DictReader(open(tmp_path / "summary.csv"))]
    assert sorted(statuses) == sorted([(n, "failed" if n.startswith("bad") else "done") for n in names])


def test_debug_lets_an_unexpected_exception_propagate(tmp_path: Path):
    with pytest.raises(RuntimeError, match="boom"):
        _run(tmp_path, ["a", "bad_predict"], debug=True)
