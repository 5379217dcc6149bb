"""The web page of ``mlib serve`` in headless Chromium (Debian's package, driven by Playwright):
log in, filter, turn a model's link on for ComfyUI, preview and apply the plan, and see the link
appear on disk. Skipped where Chromium or Playwright is missing (``.ci/run`` installs both).

The server runs in a thread on 127.0.0.1 and is stopped by the fixture.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenario import make_example, mlib

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here")

TOKEN = "browser-test-token-" + "y" * 16
TIMEOUT_MS = 15_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    import uvicorn

    from reconciler import server

    manifest = make_example(tmp_path, apps_off=("Tiny T5 Encoder",))
    assert mlib(manifest, "apply", "-y").returncode == 0
    port = _free_port()
    config = uvicorn.Config(
        server.create_app(manifest, TOKEN), host="127.0.0.1", port=port, log_level="warning"
    )
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not runner.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/", tmp_path
    finally:
        runner.should_exit = True
        thread.join(timeout=10)


def test_the_page_turns_a_link_on_and_applies_it(served: tuple[str, Path]) -> None:
    url, base = served
    link = base / "example" / "ComfyUI" / "models" / "text_encoders" / "Tiny-T5-Encoder.safetensors"
    assert not link.exists()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            page.fill("#token", TOKEN)
            page.click("#login button")
            page.wait_for_selector("#models tr")
            assert page.locator("#models tr").count() == 4
            page.wait_for_function("document.getElementById('status').textContent !== ''")
            assert page.inner_text("#status") == "In sync."

            page.fill("#search", "t5")
            page.click("#filter")
            page.wait_for_function("document.querySelectorAll('#models tr').length === 1")
            box = page.locator("#models input[data-app=comfy]")
            assert not box.is_checked()
            box.check()  # the page asks the API to enable it, and shows the new plan
            page.wait_for_function("document.getElementById('plan').textContent.includes('link')")
            assert "1 to link" in page.inner_text("#summary")

            page.click("#apply")
            page.wait_for_function("document.getElementById('log').textContent.includes('done:')")
            assert "done: " in page.inner_text("#log") and "0 failed" in page.inner_text("#log")
            # three actions (overrides, index, link), each counted as it ended
            assert page.eval_on_selector("#progress", "p => [p.value, p.max]") == [3, 3]
            page.wait_for_function(
                "document.getElementById('summary').textContent.includes('0 to link')"
            )
        finally:
            browser.close()
    assert link.is_symlink() and link.resolve().is_file()  # the link is on disk
    assert mlib(base / "manifests" / "example.yaml", "status").returncode == 0
