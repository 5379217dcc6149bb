"""The ``mlib`` command line: parses arguments, calls :mod:`reconciler.api`, prints results.

The only module that prints. Heavy modules are imported inside the commands that use them so that
``mlib --help`` stays fast. Errors a user can fix are printed as one line each, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
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

OFFLINE_HELP = "Resolve remote sources from mlib.lock only (also: HF_HUB_OFFLINE=1)."


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
@click.argument("source")
@click.option("--name", help="Official name [default: from the source].")
@click.option("--type", "type_", help="llm | diffusion | embedding | audio | vision | other.")
@click.option("--family", help="Free slug: sdxl, flux, llama...")
@click.option("--kind", help="checkpoint, lora, vae, text_encoder, gguf...")
@click.option("--tag", "tags", multiple=True, help="A tag (repeat for more).")
@click.option("--id", "model_id", help="An explicit id <type>/<family>/<name>.")
@click.option(
    "--mode", type=click.Choice(["copy", "hardlink", "move"]), help="Import mode of a path."
)
@click.pass_obj
@_handle_errors
def add(
    obj: Context,
    source: str,
    name: str | None,
    type_: str | None,
    family: str | None,
    kind: str | None,
    tags: tuple[str, ...],
    model_id: str | None,
    mode: str | None,
) -> None:
    """Add a model to the manifest, keeping its comments. SOURCE: hf:org/repo[@rev][:glob], a
    URL, or a path."""
    from reconciler import manifest_edit
    from reconciler.errors import InvalidInputError, Problem

    parsed = manifest_edit.parse_source(source, obj.manifest_path, mode)
    if "path" in parsed and not (type_ and family and kind):
        guess = _probe_source(Path(source).expanduser())
        if guess is not None:
            type_ = type_ or (guess.type.value if guess.type else None)
            kind = kind or guess.kind
            family = family or guess.family
            click.echo(f"guessed from the file: {guess.reason}", err=True)
    missing = [flag for flag, value in (("--type", type_), ("--family", family), ("--kind", kind))
               if not value]  # fmt: skip
    if missing:
        raise InvalidInputError(
            [
                Problem(
                    str(obj.manifest_path),
                    None,
                    "models",
                    f"the new model needs {', '.join(missing)}",
                    "give them, e.g. --type diffusion --family sdxl --kind lora",
                )
            ]
        )
    entry: dict[str, Any] = {"name": name or manifest_edit.default_name(parsed)}
    if model_id:
        entry["id"] = model_id
    entry |= {"type": type_, "family": family, "kind": kind, "source": parsed}
    if tags:
        entry["tags"] = list(tags)
    done = manifest_edit.add_model(obj.manifest_path, entry)
    click.echo(f"{done.summary} in {obj.manifest_path}; 'mlib plan' shows what it brings")


def _probe_source(path: Path) -> Any:
    """What :mod:`reconciler.probe` makes of a local source (the largest model file of a
    folder), or None when it recognises nothing."""
    from reconciler.probe import Format, probe_file

    if path.is_dir():
        files = [
            p for p in path.rglob("*") if p.suffix in (".safetensors", ".gguf") and p.is_file()
        ]
        if not files:
            return None
        path = max(files, key=lambda p: p.stat().st_size)
    found = probe_file(path)
    return None if found.format is Format.UNKNOWN else found


@main.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--app", "target", required=True, help="The app target whose layout FOLDER has.")
@click.option("-y", "--yes", is_flag=True, help="Apply without asking.")
@click.option("--dry-run", is_flag=True, help="Only say what would be adopted.")
@click.pass_obj
@_handle_errors
def adopt(obj: Context, folder: Path, target: str, yes: bool, dry_run: bool) -> None:
    """Move an app's existing model files into the library and link them back under the names
    the app saw (identical copies stored once). Shown as a plan first."""
    from reconciler import api
    from reconciler.render import plan_lines, show

    report = api.adopt(obj.manifest_path, folder, target, write=not dry_run)
    scan, proposal = report.scan, report.proposal
    for entry in proposal.entries:
        click.echo(f"  + model  {entry['type']}/{entry['family']}/{entry['name']}  <- "
                   f"{show(entry['source']['path'])}")  # fmt: skip
    for model, _, _ in proposal.overrides:
        click.echo(f"  = same bytes as {model}: linked to it")
    for path, kept in proposal.left:
        click.echo(f"  left     {show(str(path))}: identical to {show(str(kept))} in the same app")
    for path, why in proposal.refused:
        click.echo(f"  left     {show(str(path))}: {why}")
    for item in scan.unclassified:
        click.echo(f"  left     {show(str(item.path))}: {item.reason}")
    for link in scan.user_links:
        click.echo(f"  left     {show(str(link.path))}: your symlink (not followed)")
    for d in scan.probe_disagreements:
        click.echo(f"  warning  {show(str(d.path))}: {d.message}")
    click.echo(
        f"Adopting {len(proposal.entries)} model(s) and {len(proposal.overrides)} copy(ies) of "
        f"library models; "
        f"{len(scan.unclassified) + len(proposal.left) + len(proposal.refused)} file(s) left "
        "in place."
    )
    if dry_run or not (proposal.entries or proposal.overrides):
        return
    preview = api.make_plan(obj.manifest_path)
    for line in plan_lines(preview.plan):
        click.echo(line)
    if not yes and (not sys.stdin.isatty() or not click.confirm("Apply these changes?")):
        if api.undo_adopt(obj.manifest_path, report):
            click.echo("Nothing changed (the manifest is as it was).")
        else:
            click.echo("Another apply carried out this adoption meanwhile; the manifest keeps it.")
        sys.exit(1)
    result = api.apply(obj.manifest_path)
    for step in result.report.steps:
        if step.outcome.value != "done":
            click.echo(f"  {step.outcome.value.upper():<7} {step.action.kind.value:<15} "
                       f"{step.action.path or step.action.model} ({step.detail})")  # fmt: skip
    done = sum(1 for s in result.report.steps if s.outcome.value == "done")
    failed = len(result.report.failed)
    click.echo(f"Applied {done} of {len(result.report.steps)} actions; {failed} failed.")
    if failed or result.plan.conflicts:
        sys.exit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, help="Port to listen on.")
@click.option("--allow-remote", is_flag=True, help="Allow an address other than loopback.")
@click.pass_obj
@_handle_errors
def serve(obj: Context, host: str, port: int, allow_remote: bool) -> None:
    """A local HTTP API for a launcher (JSON; OpenAPI at /openapi.json; a bearer token)."""
    try:
        import uvicorn

        from reconciler import server
    except ImportError:
        click.echo("mlib: serve needs its extras: pip install 'mlib[serve]'", err=True)
        sys.exit(1)
    if not server.is_loopback(host) and not allow_remote:
        click.echo(
            f"mlib: {host} is reachable from other machines; pass --allow-remote if you mean it",
            err=True,
        )
        sys.exit(1)
    manifest = obj.manifest()
    token = server.new_token()
    where = server.keep_token(manifest.library, token)
    click.echo(f"mlib serve on http://{host}:{port} (token in {where}, mode 0600)")
    click.echo(f"token: {token}")
    uvicorn.run(
        server.create_app(obj.manifest_path, token), host=host, port=port, log_level="warning"
    )


@main.command()
@click.argument("model_id")
@click.argument("target")
@click.option("--versions", help="The app versions that see the model (a range).")
@click.option("--disable", is_flag=True, help="Do not link the model into this app.")
@click.option("--enable", is_flag=True, help="Link it again.")
@click.option("--folder", help="Link into this folder of the app instead (relative).")
@click.option("--filename", help="Link under this file name instead.")
@click.pass_obj
@_handle_errors
def override(
    obj: Context,
    model_id: str,
    target: str,
    versions: str | None,
    disable: bool,
    enable: bool,
    folder: str | None,
    filename: str | None,
) -> None:
    """Change how MODEL_ID is linked into the app TARGET, keeping the manifest's comments."""
    from reconciler import manifest_edit

    if disable and enable:
        raise click.UsageError("--disable and --enable contradict each other")
    if not (versions or disable or enable or folder or filename):
        raise click.UsageError(
            "say what to change: --versions, --disable, --enable, --folder, --filename"
        )
    done = manifest_edit.set_override(
        obj.manifest_path,
        model_id,
        target,
        versions=versions,
        enabled=False if disable else True if enable else None,
        folder=folder,
        filename=filename,
    )
    click.echo(f"{done.summary}; 'mlib plan' shows the links that change")


@main.command()
@click.pass_obj
@_handle_errors
def validate(obj: Context) -> None:
    """Check the manifest: every problem at once, with file, line and field."""
    from reconciler.errors import InvalidInputError
    from reconciler.translation_files import translation_problems

    manifest = obj.manifest()
    problems = translation_problems(manifest.translations)
    if problems:
        raise InvalidInputError(problems)
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
        from reconciler.render import rows_to_json

        click.echo(json.dumps(rows_to_json(rows), indent=2))
    else:
        _print_table(rows)


def _print_table(rows: list[Row]) -> None:
    header = ("ID", "KIND", "SIZE", "TAGS")
    from reconciler.render import human_bytes

    table = [(r.id, r.kind, human_bytes(r.size_bytes), ",".join(r.tags)) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *table, strict=False)]
    for line in [header, *table] if table else []:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    click.echo(f"{len(rows)} model{'s' if len(rows) != 1 else ''}")


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


@main.command()
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Save the plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--prune", is_flag=True, help="Also move models that left the manifest to the trash.")
@click.option("--offline", is_flag=True, help=OFFLINE_HELP)
@click.option(
    "--detailed-exitcode", is_flag=True, help="Exit 0 when nothing to do, 2 when there are changes."
)
@click.pass_context
@_handle_errors
def plan(
    ctx: click.Context,
    out: Path | None,
    as_json: bool,
    prune: bool,
    offline: bool,
    detailed_exitcode: bool,
) -> None:
    """Show what apply would do: downloads, imports, renames, links, unlinks, removals."""
    from reconciler import replay  # api is imported only when the plan must be made anew
    from reconciler.render import plan_lines, plan_to_json

    obj: Context = ctx.obj
    result = replay.make_plan(obj.manifest_path, prune=prune, offline=offline)
    space = replay.space_needed(result)
    if as_json:
        click.echo(json.dumps(plan_to_json(result.plan), indent=2))
    else:
        lines = plan_lines(result.plan, verbose=_verbosity(ctx) > 0)
        for line in lines[:-1]:
            click.echo(line)
        if space is not None and not space.short:
            click.echo(_space_text(space))
        click.echo(lines[-1])  # the summary, last
    if space is not None and space.short:
        click.echo(f"mlib: not enough space: {_space_text(space)}", err=True)
        sys.exit(1)
    if out is not None:
        from reconciler import api

        api.save_plan(result, out, prune=prune)
        click.echo(f"saved to {out}; apply it with 'mlib apply {out}'", err=as_json)
    if detailed_exitcode and (result.plan.actions or result.plan.conflicts):
        sys.exit(2)


@main.command()
@click.argument("planfile", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-y", "--yes", is_flag=True, help="Do not ask.")
@click.option("--prune", is_flag=True, help="Also move models that left the manifest to the trash.")
@click.option(
    "--locked", is_flag=True, help="Install exactly mlib.lock; fail if it is out of date."
)
@click.option("--offline", is_flag=True, help=OFFLINE_HELP)
@click.option(
    "-j", "--jobs", default=2, show_default=True, help="Files downloaded at the same time."
)
@click.option(
    "--lock-timeout", default=10.0, show_default=True, help="Seconds to wait for another apply."
)
@click.pass_context
@_handle_errors
def apply(
    ctx: click.Context,
    planfile: Path | None,
    yes: bool,
    prune: bool,
    locked: bool,
    offline: bool,
    jobs: int,
    lock_timeout: float,
) -> None:
    """Apply the plan (a saved PLANFILE exactly, or refused as stale)."""
    from reconciler import api
    from reconciler.render import plan_lines

    obj: Context = ctx.obj
    if not yes:
        if not sys.stdin.isatty():
            click.echo("mlib: not a terminal: pass -y to apply without asking", err=True)
            sys.exit(1)
        preview = api.make_plan(obj.manifest_path, prune=prune, offline=offline, locked=locked)
        for line in plan_lines(preview.plan):
            click.echo(line)
        if not preview.plan.actions:
            return
        if not click.confirm("Apply these changes?"):
            click.echo("Nothing changed.")
            sys.exit(1)
    bars = _Bars(enabled=sys.stderr.isatty() and not ctx.find_root().params.get("quiet"))
    try:
        result = api.apply(
            obj.manifest_path,
            saved=planfile,
            prune=prune,
            offline=offline,
            locked=locked,
            jobs=jobs,
            lock_timeout=lock_timeout,
            progress=bars if bars.enabled else None,
            on_plan=bars.begin,
        )
    finally:
        bars.close()
    for step in result.report.steps:
        a = step.action
        mark = {"done": "ok", "failed": "FAILED", "skipped": "skipped"}[step.outcome.value]
        detail = f" ({step.detail})" if step.detail else ""
        click.echo(f"  {mark:<7} {a.kind.value:<15} {a.path or a.model}{detail}")
    for c in result.plan.conflicts:  # what was left, and why: a bare count tells nothing
        model = f"{c.model}: " if c.model else ""
        click.echo(f"  CONFLICT {c.kind.value:<15} {c.path or c.model}")
        click.echo(f"      {model}{c.message} ({c.fix})")
    done = sum(1 for s in result.report.steps if s.outcome.value == "done")
    failed = len(result.report.failed)
    conflicts = len(result.plan.conflicts)
    click.echo(
        f"Applied {done} of {len(result.report.steps)} actions; {failed} failed; "
        f"{conflicts} conflict{'s' if conflicts != 1 else ''} left untouched."
    )
    if failed or conflicts:
        sys.exit(1)


class _Bars:
    """Progress of imports and downloads on a terminal: one bar per model being written (bytes,
    rate, time left) and one for everything; nothing when stderr is not a terminal or with -q.
    Called from the download threads too, hence the lock."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._bars: dict[str, Any] = {}
        self._overall: Any = None

    def begin(self, plan: Any) -> None:
        from reconciler.actions import ActionKind

        writes = [a for a in plan.actions if a.kind in (ActionKind.IMPORT, ActionKind.DOWNLOAD)]
        if not self.enabled or not writes:
            return
        from tqdm import tqdm

        total = sum(a.size for a in writes)
        self._overall = tqdm(total=total, unit="B", unit_scale=True, desc="all", leave=False)

    def __call__(self, action: Any, n: int) -> None:
        with self._lock:
            bar = self._bars.get(action.model)
            if bar is None:
                from tqdm import tqdm

                name = action.model.rsplit("/", 1)[-1][:24]
                bar = self._bars[action.model] = tqdm(
                    total=action.size or None, unit="B", unit_scale=True, desc=name, leave=False
                )
            bar.update(n)
            if self._overall is not None:
                self._overall.update(n)

    def close(self) -> None:
        for bar in [*self._bars.values(), self._overall]:
            if bar is not None:
                bar.close()
        self._bars = {}
        self._overall = None


def _space_text(space: Any) -> str:
    from reconciler.render import human_bytes

    needed, free = human_bytes(space.needed), human_bytes(space.free)
    if space.short:
        return f"{needed} to write in {space.where}, only {free} free (free some space first)"
    return f"Space: {needed} to write in {space.where}, {free} free."


@main.command()
@click.option(
    "--check", is_flag=True, help="Only say whether mlib.lock is current (exit 1 if not)."
)
@click.pass_obj
@_handle_errors
def lock(obj: Context, check: bool) -> None:
    """Resolve every remote source (Hub commit, files, sizes, sha256) into mlib.lock."""
    from reconciler import api

    if check:
        problems = api.lock_check(obj.manifest_path)
        for line in problems:
            click.echo(f"  {line}")
        if problems:
            click.echo("mlib.lock is out of date: run 'mlib lock'.")
            sys.exit(1)
        click.echo("mlib.lock is current.")
        return
    report = api.lock(obj.manifest_path)
    for model, why in report.failed:
        click.echo(f"  FAILED  {model}: {why}")
    click.echo(
        f"Locked {len(report.locked)} model(s) in {report.path}; {len(report.failed)} failed."
    )
    if report.failed:
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print drift as JSON.")
@click.option("--offline", is_flag=True, help=OFFLINE_HELP)
@click.pass_obj
@_handle_errors
def status(obj: Context, as_json: bool, offline: bool) -> None:
    """Drift between the manifest, the library, the index and the app folders (exit 2 if any)."""
    from reconciler import replay
    from reconciler.render import show

    result = replay.make_plan(obj.manifest_path, offline=offline)
    drift = result.plan.drift
    conflicts = result.plan.conflicts
    if as_json:
        from reconciler.render import status_to_json

        data = status_to_json(result.plan)
        click.echo(json.dumps(data, indent=2))
    else:
        for d in drift:
            click.echo(f"  {d.kind.value:<16} {show(d.path) or d.model}: {d.message}")
        for c in conflicts:
            click.echo(f"  {'conflict':<16} {show(c.path)}: {c.message}")
        if not drift and not conflicts:
            click.echo("In sync: the library, the index and the app folders match the manifest.")
        else:
            click.echo(
                f"{len(drift)} drifted, {len(conflicts)} conflicts; 'mlib plan' shows the fix."
            )
    if drift or conflicts:
        sys.exit(2)


@main.command()
@click.argument("ids", nargs=-1)
@click.pass_obj
@_handle_errors
def verify(obj: Context, ids: tuple[str, ...]) -> None:
    """Rehash model files and compare with metadata.json (exit 1 on any mismatch)."""
    from reconciler import api
    from reconciler.render import human_bytes

    root, _ = obj.library_root()
    result = api.verify(root, list(ids) or None)
    for m in result.mismatches:
        click.echo(f"MISMATCH {m.model}: {m.path}: {m.message}", err=True)
    click.echo(
        f"verified {result.checked_files} files ({human_bytes(result.checked_bytes)}); "
        f"{len(result.mismatches)} mismatch{'es' if len(result.mismatches) != 1 else ''}"
    )
    if result.mismatches:
        sys.exit(1)


def _verbosity(ctx: click.Context) -> int:
    root = ctx.find_root()
    return int(root.params.get("verbose") or 0)
