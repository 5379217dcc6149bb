"""``mlib serve``: a local HTTP JSON API over :mod:`reconciler.api` for a launcher (layer L4).

FastAPI (on Starlette and uvicorn) was chosen because it is well kept, publishes the OpenAPI
document at ``/openapi.json`` from the same code that serves the routes, and comes with a test
client; the routes are thin: each calls the same ``reconciler.api`` function as the CLI command
of the same name, and answers the same JSON (``schemas/``).

Every request must carry ``Authorization: Bearer <token>``, the token generated when the server
starts (printed once, kept with mode 0600 in ``<library>/.mlib/serve-token``); a request without
it gets 401, whatever the path. The server binds to loopback unless told otherwise.

Served: models (filtered, paginated), one model, the plan (or a plan kept under an id, which an
apply then does exactly, or refuses with 409 once the manifest or the disk changed), the status,
verify, an index rebuild, override changes (answering the new plan), and apply, at once or in the
background with its progress as Server-Sent Events (the plan's size, each action as it starts and
ends, bytes written) and a cancellation that stops between two (atomic) actions; one at a time
(409); doctor and its install; and a small page at ``/`` (plain HTML and script in ``web/``: it
holds no data and asks for the token, which only its script's requests carry).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from reconciler import api
from reconciler.actions import Action, Plan
from reconciler.errors import (
    InvalidInputError,
    LockTimeoutError,
    ReconcilerError,
    StalePlanError,
)
from reconciler.executor import Step
from reconciler.index import Query as Filters
from reconciler.render import plan_to_json, rows_to_json, status_to_json

TOKEN_FILE = ".mlib/serve-token"
#: Plans kept by ``POST /api/plans`` (the format of ``mlib plan -o``), named by their id.
PLANS = ".mlib/plans"
#: How many saved plans are kept; older ones are removed as new ones are saved.
KEEP_PLANS = 20
#: The most models one page of ``GET /api/models`` holds.
MAX_PAGE = 1000
#: The largest request body accepted (an override change is a few hundred bytes).
MAX_BODY = 64 << 10


def new_token() -> str:
    return secrets.token_urlsafe(32)


def keep_token(library: Path, token: str) -> Path:
    """Write ``token`` to ``<library>/.mlib/serve-token``, readable by its owner only (created
    with mode 0600, then renamed into place: never readable by others, even for a moment)."""
    path = library / TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(manifest_path: Path, token: str) -> FastAPI:
    """The API for the manifest at ``manifest_path``, answering only requests with ``token``."""
    app = FastAPI(
        title="mlib",
        summary="One model library, linked into every app, described by a manifest.",
        version="1",
        responses={  # what any route may answer besides its own
            401: {"description": "missing or wrong token"},
            413: {"description": "a body over 64 KiB"},
            422: {"description": "invalid input (the problems say where and how to fix)"},
        },
    )
    expected = f"Bearer {token}".encode()

    @app.middleware("http")
    async def authorize(request: Request, call_next: Any) -> Any:
        if request.url.path == "/" and request.method == "GET":
            return await call_next(request)  # the page holds no data; it asks for the token
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return JSONResponse(
                {"error": "missing or wrong token", "fix": "send Authorization: Bearer <token>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)

    @app.middleware("http")
    async def bounded(request: Request, call_next: Any) -> Any:  # runs before authorize
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            return JSONResponse({"error": f"bodies are at most {MAX_BODY} bytes"}, 413)
        return await call_next(request)

    @app.exception_handler(LockTimeoutError)
    async def busy(request: Request, exc: LockTimeoutError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "fix": "wait for the other apply"}, 409)

    @app.exception_handler(StalePlanError)
    async def stale(request: Request, exc: StalePlanError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "fix": "preview the plan again"}, 409)

    @app.exception_handler(InvalidInputError)
    async def invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
        problems = [p.render() for p in exc.problems]
        return JSONResponse({"error": "invalid input", "problems": problems}, 422)

    @app.exception_handler(ReconcilerError)
    async def reconciler_error(request: Request, exc: ReconcilerError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.get("/api/models")
    def list_models(
        type: str | None = None,
        family: str | None = None,
        kind: str | None = None,
        tag: list[str] = Query(default=[]),  # noqa: B008 - FastAPI's way of a repeated parameter
        app_target: str | None = Query(default=None, alias="app"),
        search: str | None = None,
        offset: int = Query(default=0, ge=0),
        limit: int = Query(default=100, ge=1, le=MAX_PAGE),
    ) -> dict[str, Any]:
        """Models in the index, filtered as ``mlib list`` filters, one page at a time."""
        manifest = api.load(manifest_path)
        filters = Filters(type, family, kind, tuple(tag), app_target, search)
        rows = api.query(manifest.library, filters, manifest)
        page = rows[offset : offset + limit]
        out = rows_to_json(page, total=len(rows))
        for row, item in zip(page, out["models"], strict=True):
            item["apps"] = {  # the app targets it is enabled for (the page's toggles)
                a.name: bool(row.overrides.get(a.name, {}).get("enabled", True))
                for a in manifest.apps
            }
        out |= {"offset": offset, "limit": limit}
        return out

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        """The web page: models with filters and per-app toggles, the plan, apply, the status."""
        return resources.files("reconciler").joinpath("web/index.html").read_text("utf-8")

    @app.get("/api/apps")
    def apps() -> dict[str, Any]:
        """The manifest's app targets."""
        targets = api.load(manifest_path).apps
        return {
            "apps": [
                {"name": a.name, "app": a.app, "version": a.version, "link": a.link.value}
                for a in targets
            ]
        }

    @app.get("/api/models/{model_id:path}", responses={404: {"description": "no such model"}})
    def one_model(model_id: str) -> dict[str, Any]:
        """One model: its metadata.json and overrides.json as written, and its links."""
        manifest = api.load(manifest_path)
        root = manifest.library
        parts = model_id.split("/")
        if len(parts) != 3 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise HTTPException(404, f"no model {model_id!r} (an id is <type>/<family>/<name>)")
        folder = root / model_id
        try:
            metadata = api.load_json_file(folder / "metadata.json")
        except FileNotFoundError:
            raise HTTPException(404, f"no model {model_id!r} in the library") from None
        overrides = api.load_json_file(folder / "overrides.json", missing={})
        links = [
            {"app": r.app, "path": r.link_path, "file": r.file, "mode": r.mode}
            for r in api.links_of(root, model_id)
        ]
        return {"id": model_id, "metadata": metadata, "overrides": overrides, "links": links}

    @app.get("/api/plan")
    def plan(prune: bool = False) -> dict[str, Any]:
        """What ``mlib apply`` would do now (``schemas/plan.schema.json``)."""
        return plan_to_json(api.make_plan(manifest_path, prune=prune).plan)

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        """Drift and conflicts, as ``mlib status --json``."""
        return status_to_json(api.make_plan(manifest_path).plan)

    @app.post("/api/plans", status_code=201)
    def keep_plan(prune: bool = False) -> dict[str, Any]:
        """Plan now and keep the plan under an id: applying that id does exactly this plan, or
        refuses with 409 if the manifest or the disk changed since (``mlib plan -o``)."""
        result = api.make_plan(manifest_path, prune=prune)
        folder = api.load(manifest_path).library / PLANS
        folder.mkdir(parents=True, exist_ok=True)
        plan_id = secrets.token_hex(8)
        api.save_plan(result, folder / f"{plan_id}.json", prune=prune)
        _forget_old_plans(folder)
        return {"id": plan_id, "plan": plan_to_json(result.plan)}

    def saved_plan(request: ApplyRequest | None) -> Path | None:
        """The saved plan a request names (404 if there is none; 409 if it is stale)."""
        if request is None or request.plan is None:
            return None
        path = api.load(manifest_path).library / PLANS / f"{request.plan}.json"
        if not path.is_file():
            raise HTTPException(
                404, f"no plan {request.plan!r} (plans are kept by POST /api/plans)"
            )
        api.check_saved_plan(path)
        return path

    @app.post("/api/verify")
    def verify(request: VerifyRequest | None = None) -> dict[str, Any]:
        """Rehash the files of the given models (all by default) and compare them with their
        metadata.json (``mlib verify``)."""
        ids = request.models if request is not None else None
        result = api.verify(api.load(manifest_path).library, ids)
        mismatches = [{"model": m.model, "path": m.path, "message": m.message}
                      for m in result.mismatches]  # fmt: skip
        return {
            "checked_files": result.checked_files,
            "checked_bytes": result.checked_bytes,
            "mismatches": mismatches,
            "ok": not mismatches,
        }

    @app.post("/api/index/rebuild", responses={409: {"description": "an apply is running"}})
    def rebuild() -> dict[str, Any]:
        """Rebuild models.db from the metadata files (``mlib index rebuild``)."""
        report = api.rebuild_index(api.load(manifest_path).library, lock_timeout=0)
        skipped = [{"path": s.path, "reason": s.reason} for s in report.skipped]
        return {"indexed": report.indexed, "skipped": skipped, "seconds": report.seconds}

    @app.put(
        "/api/models/{model_id:path}/apps/{target}",
        responses={404: {"description": "no such model"}},
    )
    def override(model_id: str, target: str, change: OverrideChange) -> dict[str, Any]:
        """Change how a model is linked into one app target (``mlib override``: the manifest is
        edited in place, comments kept); answers the plan that follows."""
        from reconciler import manifest_edit

        fields = change.model_dump(exclude_none=True)
        if not fields:
            raise HTTPException(422, "say what to change: versions, enabled, folder, filename")
        if model_id not in {spec.id for spec in api.load(manifest_path).models}:
            raise HTTPException(404, f"no model {model_id!r} in the manifest")
        manifest_edit.set_override(
            manifest_path,
            model_id,
            target,
            versions=change.versions,
            enabled=change.enabled,
            folder=change.folder,
            filename=change.filename,
        )
        return plan_to_json(api.make_plan(manifest_path).plan)

    @app.get("/api/doctor")
    def doctor() -> dict[str, Any]:
        """What ``mlib doctor`` checks: dependencies, SQLite JSON1, symlinks, free space."""
        checks = api.doctor(api.load(manifest_path).library)
        return {"checks": [_check(c) for c in checks]}

    @app.post("/api/doctor/install")
    def install() -> dict[str, Any]:
        """``pip install`` what is missing (``mlib doctor --install``), then check again."""
        library = api.load(manifest_path).library
        code = api.install_missing(api.doctor(library))
        return {"pip_exit_code": code, "checks": [_check(c) for c in api.doctor(library)]}

    runs: dict[str, _Run] = {}

    @app.post(
        "/api/applies",
        status_code=202,
        responses={
            404: {"description": "no such saved plan"},
            409: {"description": "an apply is running, or the saved plan is stale"},
        },
    )
    def start_apply(request: ApplyRequest | None = None) -> dict[str, Any]:
        """Start an apply in the background: of a plan kept by ``POST /api/plans`` when the body
        names one (exactly that plan), else of a fresh plan. Its events stream from ``/events``.
        One at a time: 409 while another runs here, or while another process holds the library."""
        if any(not run.finished.is_set() for run in runs.values()):
            raise HTTPException(409, "an apply is running; wait for it, or cancel it")
        saved = saved_plan(request)
        run = _Run(secrets.token_hex(8))
        runs[run.id] = run
        threading.Thread(target=run.execute, args=(manifest_path, saved), daemon=True).start()
        return {"id": run.id, "events": f"/api/applies/{run.id}/events"}

    @app.get("/api/applies/{run_id}/events", responses={404: {"description": "no such apply"}})
    def apply_events(run_id: str) -> StreamingResponse:
        """Server-Sent Events: ``step`` (each action's outcome), ``bytes`` (bytes written by
        imports and downloads), then ``done`` (or ``error``)."""
        run = runs.get(run_id)
        if run is None:
            raise HTTPException(404, f"no apply {run_id!r}")
        return StreamingResponse(run.stream(), media_type="text/event-stream")

    @app.post("/api/applies/{run_id}/cancel", responses={404: {"description": "no such apply"}})
    def cancel_apply(run_id: str) -> dict[str, Any]:
        """Stop after the action under way (each action is atomic: the library stays whole; the
        actions not started stay in the plan)."""
        run = runs.get(run_id)
        if run is None:
            raise HTTPException(404, f"no apply {run_id!r}")
        run.cancel.set()
        return {"id": run_id, "cancelling": not run.finished.is_set()}

    @app.post(
        "/api/apply",
        responses={
            404: {"description": "no such saved plan"},
            409: {"description": "another apply is running, or the saved plan is stale"},
        },
    )
    def apply(request: ApplyRequest | None = None) -> dict[str, Any]:
        """Apply a saved plan, or plan again and apply (``mlib apply -y``), and answer when done;
        one at a time: 409 while another runs."""
        result = api.apply(manifest_path, saved=saved_plan(request), lock_timeout=0)
        steps = [
            {
                "kind": s.action.kind.value,
                "path": s.action.path or s.action.model,
                "outcome": s.outcome.value,
                "detail": s.detail,
            }
            for s in result.report.steps
        ]
        failed = sum(1 for s in steps if s["outcome"] == "failed")
        return {"steps": steps, "failed": failed, "conflicts": len(result.plan.conflicts)}

    return app


def _forget_old_plans(folder: Path) -> None:
    """Keep the newest :data:`KEEP_PLANS` saved plans (files this server wrote)."""
    plans = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in plans[KEEP_PLANS:]:
        old.unlink(missing_ok=True)


def _check(c: Any) -> dict[str, Any]:
    return {"name": c.name, "status": c.status.value, "detail": c.detail, "install": c.install}


class _Run:
    """One background apply: its events, kept for every reader, and its cancel flag."""

    def __init__(self, run_id: str) -> None:
        self.id = run_id
        self.events: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self.cancel = threading.Event()
        self.finished = threading.Event()

    def emit(self, event: dict[str, Any]) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def execute(self, manifest_path: Path, saved: Path | None = None) -> None:
        def on_step(step: Step) -> None:
            self.emit(
                {
                    "type": "step",
                    "kind": step.action.kind.value,
                    "path": step.action.path or step.action.model,
                    "outcome": step.outcome.value,
                    "detail": step.detail,
                }
            )

        def on_plan(plan: Plan) -> None:
            self.emit({"type": "plan", "actions": len(plan.actions)})

        def on_start(action: Action) -> None:
            path = action.path or action.model
            self.emit({"type": "start", "kind": action.kind.value, "path": path})

        def progress(action: Action, n: int) -> None:
            self.emit({"type": "bytes", "model": action.model, "bytes": n})

        try:
            result = api.apply(
                manifest_path,
                saved=saved,
                lock_timeout=0,
                progress=progress,
                on_plan=on_plan,
                on_start=on_start,
                on_step=on_step,
                cancelled=self.cancel.is_set,
            )
            failed = len(result.report.failed)
            done = sum(1 for s in result.report.steps if s.outcome.value == "done")
            self.emit({"type": "done", "done": done, "failed": failed,
                       "cancelled": self.cancel.is_set()})  # fmt: skip
        except ReconcilerError as exc:
            self.emit({"type": "error", "error": str(exc)})
        except Exception as exc:  # reported to the reader; the library is as each step left it
            self.emit({"type": "error", "error": f"{type(exc).__name__}: {exc}"})
        finally:
            self.finished.set()
            with self.changed:
                self.changed.notify_all()

    def stream(self) -> Iterator[str]:
        sent = 0
        while True:
            with self.changed:
                while sent == len(self.events) and not self.finished.is_set():
                    self.changed.wait(timeout=15)
                    if sent == len(self.events) and not self.finished.is_set():
                        break  # a keep-alive comment below
                fresh = self.events[sent:]
                over = self.finished.is_set() and sent + len(fresh) == len(self.events)
            if not fresh and not over:
                yield ": still running\n\n"
                continue
            for event in fresh:
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            sent += len(fresh)
            if over:
                return


class OverrideChange(BaseModel):
    """The fields of an app override to change; those not sent stay as they are."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={  # as published: at least one field, none of them null
            "minProperties": 1,
            "properties": {
                "versions": {"type": "string", "description": "a version range"},
                "enabled": {"type": "boolean"},
                "folder": {"type": "string", "description": "a folder of the app (relative)"},
                "filename": {"type": "string", "description": "the name to link under"},
            },
        },
    )

    versions: str | None = None
    enabled: bool | None = None
    folder: str | None = None
    filename: str | None = None


class ApplyRequest(BaseModel):
    """Which plan to apply: the id ``POST /api/plans`` answered; none plans afresh."""

    model_config = ConfigDict(extra="forbid")

    plan: str | None = Field(default=None, pattern="^[0-9a-f]{16}$")


class VerifyRequest(BaseModel):
    """The models to verify (their ids); none means every model in the library."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = Field(default=None, max_length=MAX_PAGE)
