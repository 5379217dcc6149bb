"""One error hierarchy for the whole package.

Every error a user can cause carries what went wrong, where (file, line, field path) and how to fix
it. The CLI renders these as one line each and never shows a traceback for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One finding about an input file: ``file:line: field.path: message (fix)``."""

    file: str
    line: int | None
    path: str
    message: str
    fix: str = ""

    def render(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.path:
            parts.append(self.path)
        text = self.message if not self.fix else f"{self.message} ({self.fix})"
        parts.append(text)
        return ": ".join(parts)


class ReconcilerError(Exception):
    """Base of every error the package raises on purpose."""


class InvalidInputError(ReconcilerError):
    """An input file (manifest, metadata, overrides, translation, lock) is not acceptable.

    Holds every problem found, so a user fixes them all in one round.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(p.render() for p in self.problems))


class VersionRangeError(ReconcilerError, ValueError):
    """A version or version range could not be parsed."""


class NamingError(ReconcilerError, ValueError):
    """A name cannot be turned into a safe file or folder name (empty, traversal, absolute)."""


class IndexDbError(ReconcilerError):
    """models.db cannot be opened, migrated or written."""


class LockTimeoutError(ReconcilerError):
    """Another process holds the library lock."""


class TranslationError(ReconcilerError):
    """No translation fits an app target, two fit equally well, or a rule cannot be applied."""


class StalePlanError(ReconcilerError):
    """A saved plan no longer matches the manifest or the disk."""


class FileChangedError(ReconcilerError):
    """A file changed (size, mtime or identity) while it was being read, so its hashes are void."""


class LinkLoopError(ReconcilerError):
    """A folder link would sit inside the folder it points to (apps following links would loop)."""


class SourceError(ReconcilerError):
    """A remote source cannot be resolved or fetched: what went wrong, and how to fix it.

    ``str()`` is one line naming the source; ``fix`` is said separately so a plan can show it as a
    conflict's fix. ``retry`` marks failures worth another attempt (connection lost, 5xx, 429).
    """

    def __init__(self, message: str, fix: str = "", *, retry: bool = False) -> None:
        super().__init__(message if not fix else f"{message} ({fix})")
        self.message = message
        self.fix = fix
        self.retry = retry


class LockFileError(ReconcilerError):
    """mlib.lock is missing, out of date with the manifest, or malformed, when it must be used."""
