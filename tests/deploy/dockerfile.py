"""A small Dockerfile reader: instructions by stage, enough to check the image's contract."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


@dataclass
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT/CMD (ValueError for the shell form)."""
        value = json.loads(self.args)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{self.keyword} is not in exec form: {self.args}")
        return value

    def command(self) -> str:
        """A RUN's shell command, without its leading options (`--mount=...`)."""
        words = self.args.split(" ")
        while words and words[0].startswith("--"):
            words.pop(0)
        return " ".join(words)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs (the form this Dockerfile uses)."""
        pairs: dict[str, str] = {}
        for instruction in self.all("ENV"):
            pairs.update(re.findall(r"(\w+)=(\S+)", instruction.args))
        return pairs


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def instructions(text: str) -> list[Instruction]:
    joined: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    result = []
    for line in joined:
        keyword, _, rest = line.partition(" ")
        result.append(Instruction(keyword.upper(), " ".join(rest.split())))
    return result


def parse(path: Path = DOCKERFILE) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions(path.read_text()):
        if instruction.keyword == "FROM":
            base, _, name = instruction.args.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        elif not stages and instruction.keyword == "ARG":
            key, _, default = instruction.args.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(args, stages)
