"""Plans and reports as JSON (``schemas/plan.schema.json``) and as Terraform-like text lines.

Pure formatting: returns strings and dicts; the CLI prints them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from reconciler.actions import Action, ActionKind, DriftKind, Plan
from reconciler.actions import human_bytes as human_bytes  # re-exported: the CLI uses it

if TYPE_CHECKING:
    from reconciler.index import Row

_LINKS = (ActionKind.LINK, ActionKind.RELINK)
_PLANNED = (DriftKind.MODEL_MISSING, DriftKind.LINK_MISSING)


def plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "actions": [_action_json(a) for a in plan.actions],
        "noops": [asdict(n) for n in plan.noops],
        "conflicts": [{**asdict(c), "kind": c.kind.value} for c in plan.conflicts],
        "drift": [{**asdict(d), "kind": d.kind.value} for d in plan.drift],
        "warnings": list(plan.warnings),
        "summary": summary_counts(plan),
    }


def _action_json(a: Action) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": a.kind.value, "model": a.model, "reason": a.reason}
    for name in ("path", "target", "mode", "app", "data"):
        value = getattr(a, name)
        if value:
            out[name] = value
    if a.files:
        out["files"] = [asdict(f) for f in a.files]
    if a.size:
        out["size"] = a.size
    return out


def summary_counts(plan: Plan) -> dict[str, int]:
    return {
        "download": plan.count(ActionKind.DOWNLOAD),
        "download_bytes": plan.download_bytes,
        "import": plan.count(ActionKind.IMPORT),
        "import_bytes": plan.import_bytes,
        "link": plan.count(*_LINKS),
        "unlink": plan.count(ActionKind.UNLINK),
        "remove": plan.count(ActionKind.TRASH),
        "other": plan.count(
            ActionKind.CLEAR_STAGING,
            ActionKind.MKDIR,
            ActionKind.RENAME,
            ActionKind.WRITE_METADATA,
            ActionKind.WRITE_OVERRIDES,
            ActionKind.INDEX_UPSERT,
            ActionKind.WRITE_CONFIG,
            ActionKind.SET_ASIDE,
            ActionKind.INDEX_DELETE,
            ActionKind.FINISH_MOVE,
        ),
        "conflicts": len(plan.conflicts),
    }


def summary_line(plan: Plan) -> str:
    c = summary_counts(plan)
    other = f", {c['other']} other change{_s(c['other'])}" if c["other"] else ""
    fetch = (
        f"{c['download']} to download ({human_bytes(c['download_bytes'])}), "
        if c["download"]
        else ""
    )
    copied = f"{c['import']} to import ({human_bytes(c['import_bytes'])})"
    return (
        f"Plan: {fetch}{copied}, {c['link']} to link, "
        f"{c['unlink']} to unlink, {c['remove']} to remove{other}; "
        f"{c['conflicts']} conflict{_s(c['conflicts'])}."
    )


def plan_lines(plan: Plan, *, verbose: bool = False) -> list[str]:
    """The plan as people read it: one line per action, then conflicts, drift and a summary."""
    lines: list[str] = []
    for a in plan.actions:
        lines.append(f"  {a.symbol} {a.kind.value:<15} {_what(a)}")
        lines.append(f"      {a.reason}")
    if verbose:
        for n in plan.noops:
            where = f" {show(n.path)}" if n.path else ""
            lines.append(f"  = {n.model or '-'}{where}: {n.reason}")
    for c in plan.conflicts:
        lines.append(f"  ! {c.kind.value:<15} {show(c.path)}")
        lines.append(f"      {c.model + ': ' if c.model else ''}{c.message} ({c.fix})")
    # Missing models and links are what the actions above create; the rest changed outside mlib.
    outside = [d for d in plan.drift if verbose or d.kind not in _PLANNED]
    if outside:
        lines.append("")
        lines.append("Drift (changed outside mlib):" if not verbose else "Drift:")
        for d in outside:
            lines.append(f"  {d.kind.value:<16} {show(d.path) or d.model}: {d.message}")
    for w in plan.warnings:
        lines.append(f"warning: {w}")
    if not plan.actions and not plan.conflicts:
        lines.append("No changes. The library and the app folders match the manifest.")
    lines.append(summary_line(plan))
    return lines


def _what(a: Action) -> str:
    if a.kind is ActionKind.IMPORT:
        return f"{a.model} ({human_bytes(a.size)})"
    if a.kind in (*_LINKS, ActionKind.UNLINK):
        arrow = f" -> {show(a.target)}" if a.target and a.kind is not ActionKind.UNLINK else ""
        return f"{show(a.path)}{arrow}"
    if a.kind is ActionKind.RENAME:
        return f"{show(a.path)} -> {show(a.target)}"
    return show(a.path) or a.model


def show(path: str) -> str:
    """A path relative to the current folder when that is shorter."""
    if not path:
        return ""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if len(rel) < len(path) else path


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def rows_to_json(rows: Sequence[Row], total: int | None = None) -> dict[str, Any]:
    """Index rows as ``schemas/list.schema.json`` (``mlib list --json``, ``GET /api/models``);
    ``count`` is ``total`` when the rows are one page of more."""
    return {
        "schema_version": 1,
        "count": len(rows) if total is None else total,
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


def status_to_json(plan: Plan) -> dict[str, Any]:
    """Drift and conflicts as ``schemas/status.schema.json`` (``mlib status --json``)."""
    drift = [
        {"kind": d.kind.value, "model": d.model, "path": d.path, "message": d.message}
        for d in plan.drift
    ]
    conflicts = [
        {"kind": c.kind.value, "model": c.model, "path": c.path, "message": c.message}
        for c in plan.conflicts
    ]
    return {
        "schema_version": 1,
        "drift": drift,
        "conflicts": conflicts,
        "in_sync": not drift and not conflicts,
    }
