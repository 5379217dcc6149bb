"""Contract test of mlib serve's API: schemathesis generates requests from the published
/openapi.json (bad paging, odd ids, wrong bodies...) and checks every answer: no server error,
status codes and bodies as documented. The apply and override routes change the library and the
manifest, so they run against a scratch copy of the example; the background apply routes are
left out (their threads would outlive a generated case)."""

from __future__ import annotations

import pytest
from scenario import make_example, mlib

schemathesis = pytest.importorskip("schemathesis")

TOKEN = "contract-token-" + "z" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> object:
    from reconciler import server

    manifest = make_example(tmp_path_factory.mktemp("contract"))
    assert mlib(manifest, "apply", "-y").returncode == 0
    app = server.create_app(manifest, TOKEN)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    return loaded.exclude(path_regex="^/api/applies")


@pytest.mark.slow
def test_every_route_answers_as_documented(api_schema: object) -> None:
    from hypothesis import HealthCheck, given, settings

    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[attr-defined]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: object) -> None:
            case.call_and_validate(headers=AUTH)  # type: ignore[attr-defined]

        check()
