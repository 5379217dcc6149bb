"""mlib serve: the HTTP API through FastAPI's test client, on the applied example library.

Every answer is checked against what the CLI says for the same question (or the published
schema); requests without the token are refused whatever the path.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from fastapi.testclient import TestClient
from scenario import REPO, make_example, mlib

from reconciler import server

TOKEN = "test-token-" + "x" * 20


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest = make_example(tmp_path_factory.mktemp("serve"))
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    return manifest


@pytest.fixture
def client(example: Path) -> Iterator[TestClient]:
    with TestClient(server.create_app(example, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


def schema(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((REPO / "schemas" / f"{name}.schema.json").read_text())
    return loaded


@pytest.mark.parametrize("path", ["/api/models", "/api/plan", "/openapi.json", "/nope", "/docs"])
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
def test_every_path_needs_the_token(example: Path, path: str, header: str | None) -> None:
    with TestClient(server.create_app(example, TOKEN)) as c:
        r = c.get(path, headers={"Authorization": header} if header else {})
    assert r.status_code == 401 and r.json()["fix"].startswith("send Authorization")


def test_models_are_what_mlib_list_says(client: TestClient, example: Path) -> None:
    r = client.get("/api/models")
    assert r.status_code == 200
    body = r.json()
    cli = json.loads(mlib(example, "list", "--json").stdout)
    mine = [{k: v for k, v in m.items() if k != "apps"} for m in body["models"]]
    assert mine == cli["models"] and body["count"] == cli["count"] == 4
    jsonschema.validate(
        {"schema_version": 1, "count": body["count"], "models": mine}, schema("list")
    )
    tagged = client.get("/api/models", params={"tag": ["example", "bundle"]}).json()
    assert [m["id"] for m in tagged["models"]] == ["diffusion/sd15/tiny_diffusers_pipeline"]
    page = client.get("/api/models", params={"offset": 1, "limit": 2}).json()
    assert [m["id"] for m in page["models"]] == [m["id"] for m in body["models"][1:3]]
    assert page["count"] == 4  # the total, for paging


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 100000}, {"offset": -1}])
def test_bad_paging_is_a_clear_422(client: TestClient, params: dict[str, int]) -> None:
    r = client.get("/api/models", params=params)
    assert r.status_code == 422 and r.json()["detail"]


def test_one_model_has_its_metadata_overrides_and_links(client: TestClient) -> None:
    r = client.get("/api/models/diffusion/sd15/tiny_detail_lora_v2")
    assert r.status_code == 200
    body = r.json()
    assert body["metadata"]["id"] == "diffusion/sd15/tiny_detail_lora_v2"
    assert body["overrides"]["apps"]["comfy"]["filename"] == "tiny detail lora v2.safetensors"
    (link,) = body["links"]
    assert link["app"] == "comfy" and link["path"].endswith("tiny detail lora v2.safetensors")


@pytest.mark.parametrize(
    "model_id",
    ["diffusion/sd15/nope", "diffusion/sd15", "diffusion/../../etc", "x/y/.mlib", "%2e%2e/a/b"],
)
def test_unknown_or_path_like_ids_are_404(client: TestClient, model_id: str) -> None:
    r = client.get(f"/api/models/{model_id}")
    assert r.status_code == 404, r.text


def test_plan_and_status_follow_their_schemas(client: TestClient, example: Path) -> None:
    plan = client.get("/api/plan").json()
    jsonschema.validate(plan, schema("plan"))
    assert plan["actions"] == [] and plan == json.loads(mlib(example, "plan", "--json").stdout)
    status = client.get("/api/status").json()
    jsonschema.validate(status, schema("status"))
    assert status["in_sync"] is True


def test_openapi_names_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/models", "/api/models/{model_id}", "/api/plan", "/api/status"} <= set(paths)


def test_the_token_file_is_the_owners_alone(tmp_path: Path) -> None:
    path = server.keep_token(tmp_path, "abc")
    assert path.read_text() == "abc\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    server.keep_token(tmp_path, "def")  # a new start replaces it
    assert path.read_text() == "def\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True),
                         ("localhost", True), ("0.0.0.0", False), ("192.168.1.5", False)])  # fmt: skip
def test_only_loopback_without_allow_remote(host: str, loopback: bool, example: Path) -> None:
    assert server.is_loopback(host) is loopback
    if not loopback:
        r = mlib(example, "serve", "--host", host, "--port", "1")
        assert r.returncode == 1 and "--allow-remote" in r.stderr


@pytest.fixture
def own(tmp_path: Path) -> Iterator[tuple[Path, TestClient]]:
    """A client on an example of its own (these tests change it)."""
    manifest = make_example(tmp_path)
    assert mlib(manifest, "apply", "-y").returncode == 0
    with TestClient(server.create_app(manifest, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield manifest, c


def test_an_override_edits_the_manifest_and_answers_the_plan(own: tuple[Path, TestClient]) -> None:
    manifest, c = own
    before = manifest.read_text()
    r = c.put("/api/models/diffusion/sd15/tiny_t5_encoder/apps/comfy", json={"enabled": False})
    assert r.status_code == 200, r.text
    plan = r.json()
    jsonschema.validate(plan, schema("plan"))
    assert [(a["kind"], a["model"]) for a in plan["actions"]] == [
        ("write_overrides", "diffusion/sd15/tiny_t5_encoder"),
        ("index_upsert", "diffusion/sd15/tiny_t5_encoder"),
        ("unlink", "diffusion/sd15/tiny_t5_encoder"),
    ]
    import difflib

    diff = difflib.unified_diff(before.splitlines(), manifest.read_text().splitlines(), n=0)
    changed = [d for d in diff if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    assert changed == ["+  apps:", "+    comfy: false"], changed  # the rest as it was
    applied = c.post("/api/apply").json()
    assert applied["failed"] == 0 and {s["kind"] for s in applied["steps"]} == {
        "write_overrides", "index_upsert", "unlink"
    }  # fmt: skip
    assert c.get("/api/plan").json()["actions"] == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"versions": "!!"}, 422),  # the manifest would be invalid
        ({"colour": "red"}, 422),  # not a field
        ({}, 422),  # nothing to change
        ("not json", 422),
    ],
)
def test_a_bad_override_changes_nothing(
    own: tuple[Path, TestClient], body: object, status: int
) -> None:
    manifest, c = own
    before = manifest.read_bytes()
    url = "/api/models/diffusion/sd15/tiny_t5_encoder/apps/comfy"
    if isinstance(body, str):
        r = c.put(url, content=body, headers={"Content-Type": "application/json"})
    else:
        r = c.put(url, json=body)
    assert r.status_code == status, r.text
    assert manifest.read_bytes() == before


def test_an_override_of_an_unknown_model_says_so(own: tuple[Path, TestClient]) -> None:
    _, c = own
    r = c.put("/api/models/diffusion/sd15/nope/apps/comfy", json={"enabled": False})
    assert r.status_code == 404 and "no model 'diffusion/sd15/nope'" in r.text


def test_a_huge_body_is_refused_before_reading(own: tuple[Path, TestClient]) -> None:
    _, c = own
    r = c.put(
        "/api/models/diffusion/sd15/tiny_t5_encoder/apps/comfy",
        content=b"{" + b" " * (server.MAX_BODY + 10) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413


def test_one_apply_at_a_time(own: tuple[Path, TestClient]) -> None:
    from reconciler.lock import library_lock

    manifest, c = own
    library = manifest.parent.parent / "example" / "shared-resources" / "models"
    with library_lock(library, 1):  # another apply holds the library
        r = c.post("/api/apply")
    assert r.status_code == 409 and "holds the library lock" in r.json()["error"]
    assert c.post("/api/apply").status_code == 200


def test_rebuild_reindexes(own: tuple[Path, TestClient]) -> None:
    _, c = own
    body = c.post("/api/index/rebuild").json()
    assert body["indexed"] == 4 and body["skipped"] == []


def _events(c: TestClient, run: dict[str, str]) -> list[dict[str, object]]:
    """The Server-Sent Events of a background apply, read to the end."""
    out = []
    with c.stream("GET", run["events"]) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[len("data: ") :]))
    return out


def test_a_background_apply_streams_its_steps_and_bytes(tmp_path: Path) -> None:
    manifest = make_example(tmp_path)  # not applied: 4 imports, 4 links...
    with TestClient(server.create_app(manifest, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        run = c.post("/api/applies").json()
        events = _events(c, run)
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "done" and events[-1]["failed"] == 0, events[-1]
        steps = [e for e in events if e["type"] == "step"]
        assert len(steps) == events[-1]["done"] == 12
        assert sum(int(e["bytes"]) for e in events if e["type"] == "bytes") > 0  # type: ignore[call-overload]
        assert c.get("/api/plan").json()["actions"] == []
        assert c.get("/api/applies/nope/events").status_code == 404


def test_a_cancelled_apply_stops_between_actions_and_the_plan_shows_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler import executor

    manifest = make_example(tmp_path)
    started = executor.Executor._step

    def slow_step(self: executor.Executor, action: object, failed: set[str]) -> object:
        import time

        time.sleep(0.05)  # time for the cancel to arrive part way
        return started(self, action, failed)  # type: ignore[arg-type]

    monkeypatch.setattr(executor.Executor, "_step", slow_step)
    with TestClient(server.create_app(manifest, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        run = c.post("/api/applies").json()
        assert c.post("/api/applies").status_code == 409  # one at a time
        assert c.post(f"/api/applies/{run['id']}/cancel").json()["cancelling"] is True
        events = _events(c, run)
        done = events[-1]
        assert done["type"] == "done" and done["cancelled"] is True and done["failed"] == 0
        skipped = [e for e in events if e["type"] == "step" and e["outcome"] == "skipped"]
        assert skipped and all(e["detail"] == "cancelled before it started" for e in skipped)
        left = c.get("/api/plan").json()["actions"]
        assert len(left) >= len(skipped) - 1 and left  # what was not done is still planned
    r = mlib(manifest, "apply", "-y")  # and finishing it converges
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(mlib(manifest, "plan", "--json").stdout)["actions"] == []


def test_a_background_apply_says_its_size_first_and_each_action_as_it_starts(
    tmp_path: Path,
) -> None:
    manifest = make_example(tmp_path)
    with TestClient(server.create_app(manifest, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        events = _events(c, c.post("/api/applies").json())
    assert events[0] == {"type": "plan", "actions": 12}
    ordered = [(e["type"], e["path"]) for e in events if e["type"] in ("start", "step")]
    starts, steps = ordered[0::2], ordered[1::2]  # each step between its start and the next
    assert [t for t, _ in starts] == ["start"] * 12 and [t for t, _ in steps] == ["step"] * 12
    assert [p for _, p in starts] == [p for _, p in steps]


def test_a_kept_plan_is_applied_exactly_once(own: tuple[Path, TestClient]) -> None:
    _, c = own
    c.put("/api/models/diffusion/sd15/tiny_t5_encoder/apps/comfy", json={"enabled": False})
    kept = c.post("/api/plans")
    assert kept.status_code == 201
    body = kept.json()
    assert body["plan"] == c.get("/api/plan").json() and len(body["plan"]["actions"]) == 3
    applied = c.post("/api/apply", json={"plan": body["id"]}).json()
    assert applied["failed"] == 0 and len(applied["steps"]) == 3
    again = c.post("/api/apply", json={"plan": body["id"]})  # the disk has changed since
    assert again.status_code == 409 and "stale" in again.json()["error"]


def test_a_kept_plan_goes_stale_when_the_manifest_changes(own: tuple[Path, TestClient]) -> None:
    manifest, c = own
    kept = c.post("/api/plans").json()
    assert kept["plan"]["actions"] == []
    c.put("/api/models/diffusion/sd15/tiny_t5_encoder/apps/comfy", json={"enabled": False})
    link = manifest.parent.parent / "example" / "ComfyUI" / "models" / "text_encoders"
    before = sorted(p.name for p in link.iterdir())
    for path in ("/api/apply", "/api/applies"):
        r = c.post(path, json={"plan": kept["id"]})
        assert r.status_code == 409 and "now also needed: unlink" in r.json()["error"], r.text
    assert sorted(p.name for p in link.iterdir()) == before  # nothing was applied
    assert len(c.get("/api/plan").json()["actions"]) == 3


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"plan": "0123456789abcdef"}, 404),  # well formed, never kept
        ({"plan": "../../../etc/passwd"}, 422),
        ({"plan": "0123456789ABCDEF"}, 422),
        ({"plan": 7}, 422),
        ({"colour": "red"}, 422),
    ],
)
def test_applying_an_unknown_or_malformed_plan_id_is_refused(
    client: TestClient, body: object, status: int
) -> None:
    for path in ("/api/apply", "/api/applies"):
        assert client.post(path, json=body).status_code == status


def test_verify_rehashes_and_names_the_model_that_changed(own: tuple[Path, TestClient]) -> None:
    manifest, c = own
    ok = c.post("/api/verify").json()
    assert ok["ok"] and ok["mismatches"] == [] and ok["checked_files"] >= 4
    library = manifest.parent.parent / "example" / "shared-resources" / "models"
    lora = next((library / "diffusion" / "sd15" / "tiny_detail_lora_v2").glob("*.safetensors"))
    with open(lora, "r+b") as fh:  # one byte changed, size kept
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 1]))
    bad = c.post("/api/verify", json={"models": ["diffusion/sd15/tiny_detail_lora_v2"]}).json()
    assert not bad["ok"] and bad["checked_files"] == 1
    assert [(m["model"], m["message"]) for m in bad["mismatches"]] == [
        ("diffusion/sd15/tiny_detail_lora_v2", "content (sha256) differs from metadata.json")
    ]
    odd = c.post("/api/verify", json={"models": ["../../etc", "a/b/c"]}).json()
    assert [m["message"] for m in odd["mismatches"]] == ["no such model in the library"] * 2
    assert c.post("/api/verify", json={"models": "all"}).status_code == 422


def test_doctor_says_what_mlib_doctor_says(client: TestClient, example: Path) -> None:
    checks = client.get("/api/doctor").json()["checks"]
    cli = mlib(example, "doctor").stdout.splitlines()
    shown = [(line[:8].strip(), line[9:27].strip()) for line in cli]  # "{status:<8} {name:<18}"
    assert [(c["status"], c["name"]) for c in checks] == shown
    assert all(c["status"] == "ok" for c in checks)
    installed = client.post("/api/doctor/install").json()
    assert installed["pip_exit_code"] == 0  # nothing missing: pip is not even run


def test_the_page_is_served_without_the_token_and_holds_no_data(example: Path) -> None:
    with TestClient(server.create_app(example, TOKEN)) as c:
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert 'id="models"' in r.text and "/api/applies" in r.text
        assert "tiny_sd_checkpoint" not in r.text  # the data comes only with the token
        assert c.post("/").status_code == 401 and c.get("/api/apps").status_code == 401


def test_apps_and_the_per_app_toggles(own: tuple[Path, TestClient]) -> None:
    _, c = own
    assert c.get("/api/apps").json()["apps"] == [
        {"name": "comfy", "app": "comfyui", "version": "0.3.62", "link": "auto"}
    ]
    listed = {m["id"]: m["apps"] for m in c.get("/api/models").json()["models"]}
    assert all(a == {"comfy": True} for a in listed.values()) and len(listed) == 4
    c.put("/api/models/diffusion/sd15/tiny_t5_encoder/apps/comfy", json={"enabled": False})
    c.post("/api/apply")
    listed = {m["id"]: m["apps"] for m in c.get("/api/models").json()["models"]}
    assert listed["diffusion/sd15/tiny_t5_encoder"] == {"comfy": False}
    assert listed["diffusion/sd15/tiny_sd_checkpoint"] == {"comfy": True}
