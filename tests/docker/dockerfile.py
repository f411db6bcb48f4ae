"""A small reader of docker/Dockerfile for the tests: instructions per stage, ENV, labels."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        out = {}
        for args in self.all("ENV"):
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                out[key] = value
        return out

    def labels(self) -> dict[str, str]:
        out = {}
        for args in self.all("LABEL"):
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                out[key] = value
        return out

    def exec_form(self, keyword: str) -> list[str]:
        """The JSON (exec) form of ENTRYPOINT / CMD."""
        return json.loads(self.all(keyword)[-1])


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.partition(" ")
        out.append((keyword.upper(), args.strip()))
        buf = ""
    return out


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    result: list[Stage] = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            m = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            result.append(Stage(m.group(1) if m else str(len(result))))
        if result:
            result[-1].instructions.append((keyword, args))
    return result
