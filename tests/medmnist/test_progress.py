"""Progress lines of a MedMNIST run without a terminal, and the code version stamped on results."""

from __future__ import annotations

import io
import re

from medssl.medmnist import progress as pr
from medssl.medmnist.provenance import code_version


def test_lines_without_bars_are_timestamped_and_rate_limited(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(pr.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    ui = pr.Progress(bars=False, every_s=60, stream=out)
    assert ui.lines
    ui.log("job 1/3 starts")  # an event: always
    assert ui.tick("epoch 1/100")  # the first update is shown
    clock[0] += 30
    assert not ui.tick("epoch 2/100")  # 30 s later: held back
    assert ui.tick("epoch 3/100", force=True)  # a stage end: shown anyway
    clock[0] += 61
    assert ui.tick("epoch 4/100")
    lines = out.getvalue().splitlines()
    assert [ln[11:] for ln in lines] == ["job 1/3 starts", "epoch 1/100", "epoch 3/100", "epoch 4/100"]
    assert all(re.fullmatch(r"\[\d\d:\d\d:\d\d\] .+", ln) for ln in lines)


def test_bars_or_quiet_print_no_lines():
    out = io.StringIO()
    bars = pr.Progress(bars=True, stream=out)
    assert not bars.lines and not bars.tick("epoch 1", force=True)
    quiet = pr.Progress(bars=False, quiet=True, stream=out)
    quiet.log("x")
    assert not quiet.tick("y", force=True) and out.getvalue() == ""


def test_code_version_names_the_package_version():
    import medssl

    v = code_version()
    assert v.startswith(f"medssl {medssl.__version__}")
    assert re.fullmatch(rf"medssl {re.escape(medssl.__version__)}( \(git [0-9a-f]{{7,}}(, uncommitted changes)?\))?", v)
