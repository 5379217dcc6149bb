"""The ``mlib`` command line: parses arguments, calls :mod:`reconciler.api`, prints results.

The only module that prints. Heavy modules are imported inside the commands that use them so that
``mlib --help`` stays fast. Errors a user can fix are printed as one line each, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from reconciler.index import Row
    from reconciler.model import Manifest

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    manifest_path: Path
    manifest_given: bool
    root: Path | None

    def manifest(self) -> Manifest:
        from reconciler import api

        return api.load(self.manifest_path)

    def library_root(self) -> tuple[Path, Manifest | None]:
        """``--root`` if given (with the manifest if there is one), else the manifest's library."""
        if self.root is not None:
            has_manifest = self.manifest_given or self.manifest_path.exists()
            return self.root, self.manifest() if has_manifest else None
        if not self.manifest_given and not self.manifest_path.exists():
            from reconciler.errors import InvalidInputError, Problem

            raise InvalidInputError(
                [
                    Problem(
                        str(self.manifest_path),
                        None,
                        "",
                        "no manifest here, and no --root given",
                        "pass --root LIBRARY, or -m MANIFEST, or run 'mlib init'",
                    )
                ]
            )
        manifest = self.manifest()
        return manifest.library, manifest


def _handle_errors(fn: F) -> F:
    """Turn the package's own errors into ``mlib: ...`` lines and exit 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from reconciler.errors import InvalidInputError, ReconcilerError

        try:
            return fn(*args, **kwargs)
        except InvalidInputError as exc:
            for problem in exc.problems:
                click.echo(problem.render(), err=True)
            count = len(exc.problems)
            click.echo(f"mlib: {count} problem{'s' if count != 1 else ''} found", err=True)
            sys.exit(1)
        except ReconcilerError as exc:
            click.echo(f"mlib: error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


class _LogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"mlib: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO)[min(verbose, 1)]
    if verbose >= 2:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter())
    root = logging.getLogger("reconciler")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-m",
    "--manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Manifest file [default: $MLIB_MANIFEST or ./mlib.yaml].",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Library root; overrides the manifest's 'library:'.",
)
@click.option("-v", "--verbose", count=True, help="Say more (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.version_option(package_name="mlib", prog_name="mlib")
@click.pass_context
def main(
    ctx: click.Context, manifest: Path | None, root: Path | None, verbose: int, quiet: bool
) -> None:
    """mlib: one model library, linked into every app, described by a manifest."""
    _setup_logging(verbose, quiet)
    env = os.environ.get("MLIB_MANIFEST")
    given = manifest is not None or bool(env)
    path = manifest or Path(env or "mlib.yaml")
    ctx.obj = Context(manifest_path=path, manifest_given=given, root=root)


@main.command()
@click.option("--force", is_flag=True, help="Replace an existing manifest.")
@click.pass_obj
@_handle_errors
def init(obj: Context, force: bool) -> None:
    """Write a commented starter manifest."""
    from reconciler import api

    api.init(obj.manifest_path, force=force)
    click.echo(f"wrote {obj.manifest_path}; edit it, then run 'mlib validate'")


@main.command()
@click.pass_obj
@_handle_errors
def validate(obj: Context) -> None:
    """Check the manifest: every problem at once, with file, line and field."""
    manifest = obj.manifest()
    n, a = len(manifest.models), len(manifest.apps)
    click.echo(
        f"{obj.manifest_path}: valid ({n} model{'s' if n != 1 else ''}, "
        f"{a} app target{'s' if a != 1 else ''}, library {manifest.library})"
    )


@main.group()
def index() -> None:
    """The models.db index."""


@index.command("rebuild")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
@_handle_errors
def index_rebuild(obj: Context, as_json: bool) -> None:
    """Rebuild models.db from every metadata.json under the library root."""
    from reconciler import api

    root, _ = obj.library_root()
    report = api.rebuild_index(root)
    if as_json:
        data = {
            "root": str(report.root),
            "found": report.found,
            "indexed": report.indexed,
            "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
            "seconds": round(report.seconds, 3),
        }
        click.echo(json.dumps(data, indent=2))
        return
    for s in report.skipped:
        click.echo(f"skipped {s.path}: {s.reason}", err=True)
    click.echo(
        f"indexed {report.indexed} of {report.found} models in {report.seconds:.2f} s"
        f" ({len(report.skipped)} skipped) -> {report.root / 'models.db'}"
    )


@main.command("list")
@click.option("--type", "type_", help="Model type (llm, diffusion, ...).")
@click.option("--family", help="Family slug (sdxl, flux, llama, ...).")
@click.option("--kind", help="Kind (checkpoint, lora, vae, ...).")
@click.option("--tag", "tags", multiple=True, help="Tag; repeat it: all must match.")
@click.option("--app", help="App target: models enabled for it.")
@click.option("--search", help="Text in the name or id (case-insensitive).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schemas/list.schema.json).")
@click.pass_obj
@_handle_errors
def list_(
    obj: Context,
    type_: str | None,
    family: str | None,
    kind: str | None,
    tags: tuple[str, ...],
    app: str | None,
    search: str | None,
    as_json: bool,
) -> None:
    """List models in the index."""
    from reconciler import api
    from reconciler.index import Query

    root, manifest = obj.library_root()
    q = Query(type=type_, family=family, kind=kind, tags=tags, app=app, search=search)
    rows = api.query(root, q, manifest)
    if as_json:
        click.echo(json.dumps(_list_json(rows), indent=2))
    else:
        _print_table(rows)


def _list_json(rows: list[Row]) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "count": len(rows),
        "models": [
            {
                "id": r.id,
                "official_name": r.official_name,
                "cleaned_name": r.cleaned_name,
                "type": r.model_type,
                "family": r.family,
                "kind": r.kind,
                "tags": list(r.tags),
                "size_bytes": r.size_bytes,
                "sha256": r.sha256,
                "updated_at": r.updated_at,
            }
            for r in rows
        ],
    }


def _print_table(rows: list[Row]) -> None:
    header = ("ID", "KIND", "SIZE", "TAGS")
    table = [(r.id, r.kind, human_bytes(r.size_bytes), ",".join(r.tags)) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *table, strict=False)]
    for line in [header, *table] if table else []:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    click.echo(f"{len(rows)} model{'s' if len(rows) != 1 else ''}")


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


@main.command()
@click.option("--install", is_flag=True, help="pip install what is missing.")
@click.pass_obj
@_handle_errors
def doctor(obj: Context, install: bool) -> None:
    """Check dependencies, SQLite JSON1, symlink support and free space."""
    from reconciler import api
    from reconciler.doctor import Status

    root = obj.root or _root_or_default(obj)
    checks = api.doctor(root)
    _print_checks(checks)
    if install and any(c.status is Status.MISSING and c.install for c in checks):
        if api.install_missing(checks) != 0:
            sys.exit(1)
        checks = api.doctor(root)
        _print_checks(checks)
    if any(c.status is Status.MISSING for c in checks):
        sys.exit(1)


def _root_or_default(obj: Context) -> Path:
    if obj.manifest_path.exists():
        return obj.manifest().library
    return Path("shared-resources/models").absolute()


def _print_checks(checks: Iterable[Any]) -> None:
    for c in checks:
        click.echo(f"{c.status.value:<8} {c.name:<18} {c.detail}")
