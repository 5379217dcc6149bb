"""A parsed input document: its plain data plus the line of every value, for precise errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import Problem

#: The path of a value inside a document: ("models", 2, "source") is models[2].source.
PathKey = tuple[str | int, ...]


def field_path(key: PathKey) -> str:
    """Render ``("models", 2, "source")`` as ``models[2].source``."""
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True)
class Positions:
    """Line numbers (1-based) of every value in a loaded document, by field path."""

    lines: Mapping[PathKey, int] = field(default_factory=dict)

    def line(self, key: PathKey) -> int | None:
        """The line of ``key``, or of its nearest ancestor that has one."""
        while True:
            if key in self.lines:
                return self.lines[key]
            if not key:
                return None
            key = key[:-1]


@dataclass(frozen=True)
class Document:
    """A parsed input file: its data, where each value sits, and the name to show in errors."""

    file: str
    data: Any
    positions: Positions
    #: Problems found while parsing that did not stop it (duplicate keys: the first one is kept).
    problems: tuple[Problem, ...] = ()

    def problem(self, key: PathKey, message: str, fix: str = "") -> Problem:
        return Problem(self.file, self.positions.line(key), field_path(key), message, fix)
