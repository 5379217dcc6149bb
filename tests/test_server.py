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
    assert body["models"] == cli["models"] and body["count"] == cli["count"] == 4
    jsonschema.validate({k: body[k] for k in ("schema_version", "count", "models")}, schema("list"))
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
