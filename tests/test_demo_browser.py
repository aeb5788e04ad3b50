"""`deghost demo` in a real browser: Chromium (driven by Playwright) edits the bundled photo, and bad
uploads get a message in the page while the server keeps serving.

The server is the real command in a child process on 127.0.0.1 with the tiny untrained engines
(the session's `tiny_onnx_dir`, or a prebuilt folder named by DEGHOST_DEMO_ENGINES).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.demo_engines import demo_engines

pytest.importorskip("gradio", reason="the demo extra is not installed: pip install '.[demo]'")
playwright = pytest.importorskip("playwright.sync_api", reason="the demo extra is not installed: pip install '.[demo]'")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason="no Chromium: apt-get install chromium (Playwright drives the system browser)")

IMAGES = Path(__file__).parent / "data" / "images"
ASTRONAUT = IMAGES / "astronaut.png"
RESULT_TIMEOUT_MS = 240_000  # tiny engines edit in seconds; a busy 2-core CI machine may take minutes
UI_TIMEOUT_MS = 180_000  # an upload or a re-render; generous for the same reason
SERVER_START_S = 240


@pytest.fixture(scope="module")
def demo_url(request, tmp_path_factory):
    """`deghost demo` serving the tiny engines on a free local port; stopped after the module."""
    engines = demo_engines(request)
    port = _free_port()
    log = tmp_path_factory.mktemp("demo") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "deghost.cli", "demo", "--engines", str(engines),
                                   "--host", "127.0.0.1", "--port", str(port), "--samples", str(IMAGES)],
                                  stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(url, server, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, demo_url):
    """A fresh tab on the demo that records every request leaving 127.0.0.1 (the demo must be offline)."""
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    tab.external_requests = []
    tab.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
           else tab.external_requests.append(r.url))
    tab.goto(demo_url, timeout=120_000)
    tab.wait_for_selector("#run", timeout=120_000)
    yield tab
    tab.close()


def test_the_bundled_photo_is_edited_with_the_chosen_attribute_and_alpha(page, tmp_path):
    assert "untrained weights" in page.locator("#untrained-banner").inner_text()
    upload(page, ASTRONAUT)
    page.locator("#attribute").get_by_label("age").check()
    alpha = page.locator("#alpha input[type=number]")
    alpha.fill("-15")
    alpha.press("Enter")

    run_and_wait(page)

    assert "age-15" in page.locator("#status").inner_text()  # the attribute and α reached the pipeline
    timings = page.locator("#timings").inner_text()
    for stage in ("encoder", "generator", "diffcam", "suppressor", "deghosting", "face_parser", "total"):
        assert stage in timings
    for view in ("original", "fused", "eogi", "ours", "poisson", "result"):
        shown(page, f"#{view if view == 'result' else 'view-' + view} img")
    downloads = page.locator("#download").inner_text()  # names shown as stem, then suffix
    assert "astronaut_age-15_network" in downloads and "astronaut_age-15_grid" in downloads

    fused_before = page.locator("#view-fused img").get_attribute("src")
    page.locator("#overlays").get_by_label("Diff-CAM mask").check()
    page.wait_for_function("before => document.querySelector('#view-fused img').src !== before", arg=fused_before,
                           timeout=RESULT_TIMEOUT_MS)

    screenshot(page, tmp_path / "demo.png")
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert page.external_requests == [], f"the page fetched from outside 127.0.0.1: {page.external_requests[:5]}"


BAD_UPLOADS = {
    "text.png": (b"this is text, not a picture\n", "could not be decoded"),
    "empty.png": (b"", "empty"),
    "corrupt.png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "could not be decoded"),  # PNG magic, no image
}


def test_bad_uploads_show_a_message_and_the_server_keeps_serving(page, tmp_path):
    only_ours(page)
    for name, (content, expected) in BAD_UPLOADS.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        upload(page, bad)
        page.locator("#run").click()
        page.wait_for_function("name => document.querySelector('#status').innerText.includes(name)", arg=name,
                               timeout=RESULT_TIMEOUT_MS)
        message = page.locator("#status").inner_text()
        assert expected in message and name in message, message
        clear_upload(page)

    upload(page, ASTRONAUT)
    run_and_wait(page)  # the same server, after three bad files
    shown(page, "#view-ours img")


def test_a_photo_without_a_face_gets_a_message(page, tmp_path):
    from deghost.runtime.pipeline import Pipeline

    if not hasattr(Pipeline, "edit_photo"):
        pytest.skip("this runtime edits aligned crops (no Pipeline.edit_photo), so it looks for no faces")
    import cv2
    import numpy as np

    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((400, 300, 3), 128, np.uint8))
    only_ours(page)
    upload(page, blank)
    page.locator("#run").click()
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('⚠')",
                           timeout=RESULT_TIMEOUT_MS)
    assert "face" in page.locator("#status").inner_text().lower()


def test_without_gradio_the_command_names_the_extra(tmp_path):
    blocked = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'gradio' or name.startswith('gradio.'):\n"
        "            raise ImportError('No module named gradio')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from deghost.cli import main\n"
        f"sys.exit(main(['demo', '--engines', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "pip install 'deghost[demo]'" in done.stderr


def test_without_engines_the_command_says_how_to_build_them(tmp_path):
    done = subprocess.run([sys.executable, "-m", "deghost.cli", "demo", "--engines", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "no manifest.json" in done.stderr and "deghost build" in done.stderr


# -- driving the page ------------------------------------------------------------------------------


def upload(page, path: Path) -> None:
    """Upload `path` and wait until the component holds it (its Clear button appears with the file)."""
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.locator("#upload button[aria-label='Clear']").first.wait_for(timeout=UI_TIMEOUT_MS)


def clear_upload(page) -> None:
    """Remove the uploaded file and wait until the page shows it gone (an upload made before the
    clear is done would be cleared with it)."""
    page.locator("#upload button[aria-label='Clear']").first.click()
    page.locator("#upload button[aria-label='Clear']").first.wait_for(state="detached", timeout=UI_TIMEOUT_MS)
    page.locator("#upload input[type=file]").wait_for(state="attached", timeout=UI_TIMEOUT_MS)


def only_ours(page) -> None:
    """Run only the network suppressor: the quickest edit that still goes through every shared stage."""
    for label in ("EOGI", "Poisson"):
        page.locator("#modes").get_by_label(label).uncheck()


def run_and_wait(page) -> None:
    page.locator("#run").click()
    page.wait_for_function("() => document.querySelector('#timings').innerText.includes('total')",
                           timeout=RESULT_TIMEOUT_MS)


def shown(page, selector: str) -> None:
    """Wait until the image element is visible and its picture has loaded (non-zero natural width)."""
    page.locator(selector).wait_for(state="visible", timeout=UI_TIMEOUT_MS)
    page.wait_for_function("s => document.querySelector(s).naturalWidth > 0", arg=selector, timeout=UI_TIMEOUT_MS)


def screenshot(page, path: Path) -> Path:
    """The whole page as PNG: the README's docs/demo.png is this picture from the first test."""
    page.screenshot(path=str(path), full_page=True)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"deghost demo exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"deghost demo did not serve {url} within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")
