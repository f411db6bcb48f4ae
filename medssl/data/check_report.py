"""The result of ``medssl data check``: the problems found and their rendering (text, JSON).

:func:`medssl.data.check.check_dataset` fills a :class:`CheckReport` with :class:`Problem`
items; this module only holds them and renders them (summary line, problems grouped per case,
verdict; or JSON). The problem codes are listed in :mod:`medssl.data.check`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medssl.data.dataset import SPLIT_FOLDERS, DatasetSpec

__all__ = ["CheckReport", "Problem", "Severity"]

Severity = Literal["error", "warning"]

#: The ``(split, case)`` group of problems that concern the whole dataset.
_DATASET = ("", "")
_SPLIT_ORDER = {split: i for i, split in enumerate(SPLIT_FOLDERS)}
#: Splits left out of the summary line when they have no case (most datasets have none).
_OPTIONAL_SPLITS = ("val",)


@dataclass(frozen=True)
class Problem:
    """One problem found by :func:`medssl.data.check.check_dataset`.

    Attributes:
        case: case name, ``None`` for dataset-level problems.
        path: the file (or folder) the problem is about.
        severity: ``"error"`` (training would fail or be wrong) or ``"warning"``.
        message: one readable sentence.
        code: short machine-readable kind (see :mod:`medssl.data.check`).
        split: ``"train"``, ``"unlabeled"``, ``"val"``, ``"test"`` or ``None``.
    """

    case: str | None
    path: Path | None
    severity: Severity
    message: str
    code: str
    split: str | None = None

    def to_json(self) -> dict:
        return {
            "case": self.case,
            "split": self.split,
            "path": None if self.path is None else str(self.path),
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }


@dataclass
class CheckReport:
    """Result of :func:`medssl.data.check.check_dataset`.

    Attributes:
        root: the dataset folder.
        problems: every problem found, in discovery order.
        counts: number of cases per split.
        labeled: number of cases with a label file per split.
        spec: the parsed ``dataset.json`` (``None`` when it is missing or invalid).
    """

    root: Path
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    labeled: dict[str, int] = field(default_factory=dict)
    spec: DatasetSpec | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def for_case(self, case: str) -> list[Problem]:
        """Problems of one case (any split)."""
        return [p for p in self.problems if p.case == case]

    def _rel(self, path: Path | None) -> str:
        if path is None:
            return str(self.root)
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def summary(self) -> str:
        """One line: dataset name, cases per split (labeled ones in parentheses), classes.

        An optional split (``val``) without cases is left out.
        """
        parts = []
        for split in SPLIT_FOLDERS:
            n = self.counts.get(split, 0)
            if not n and split in _OPTIONAL_SPLITS:
                continue
            text = f"{split} {n}"
            if SPLIT_FOLDERS[split][1] is not None and n:
                text += f" ({self.labeled.get(split, 0)} labeled)"
            parts.append(text)
        name = self.spec.name if self.spec else "?"
        classes = ", ".join(f"{k}={v}" for k, v in self.spec.labels.items()) if self.spec else "unknown"
        channels = ", ".join(f"{k}={v}" for k, v in self.spec.channel_names.items()) if self.spec else "unknown"
        return f"dataset {self.root} ({name}): " + ", ".join(parts) + f"; channels: {channels}; labels: {classes}"

    def format(self) -> str:
        """Human-readable report: summary line, problems grouped per case, then the verdict."""
        lines = [self.summary()]
        groups: dict[tuple[str, str], list[Problem]] = {}
        for p in self.problems:
            groups.setdefault((p.split or "", p.case) if p.case else _DATASET, []).append(p)
        width = max((len(p.severity) for p in self.problems), default=0)
        for key in sorted(groups, key=lambda k: (k != _DATASET, _SPLIT_ORDER.get(k[0], 9), k[1])):
            lines.append("")
            lines.append("[dataset]" if key == _DATASET else f"{key[0]}/{key[1]}")
            for p in groups[key]:
                lines.append(f"  {p.severity:<{width}}  {self._rel(p.path)}: {p.message}")
        lines.append("")
        n_err, n_warn = len(self.errors), len(self.warnings)
        counts = f"{n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}"
        lines.append(counts if n_err else ("OK" if not n_warn else f"OK ({counts})"))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "counts": dict(self.counts),
            "labeled": dict(self.labeled),
            "labels": None if self.spec is None else dict(self.spec.labels),
            "channels": None if self.spec is None else dict(self.spec.channel_names),
            "problems": [p.to_json() for p in self.problems],
        }
