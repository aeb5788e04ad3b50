"""`deghost demo` in a real browser: Chromium (driven by Playwright) edits the bundled photo, and bad
uploads get a message in the page while the server keeps serving.

The server is the real command in a child process on 127.0.0.1 with the tiny untrained engines
(the session's `tiny_onnx_dir`, or a prebuilt folder named by DEGHOST_TINY_ENGINES).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.demo_page import (
    RESULT_TIMEOUT_MS,
    DemoServerError,
    choose_modes,
    clear_upload,
    demo_server,
    run_and_wait,
    shown,
    upload,
)
from tests.helpers.tiny_engines import tiny_engines

pytest.importorskip("gradio", reason="the demo extra is not installed: pip install '.[demo]'")
playwright = pytest.importorskip("playwright.sync_api", reason="the demo extra is not installed: pip install '.[demo]'")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason="no Chromium: apt-get install chromium (Playwright drives the system browser)")

IMAGES = Path(__file__).parent / "data" / "images"
ASTRONAUT = IMAGES / "astronaut.png"


@pytest.fixture(scope="module")
def demo_url(request, module_tmp_path):
    """`deghost demo` serving the tiny engines on a free local port; stopped after the module."""
    engines = tiny_engines(request)
    log = module_tmp_path / "server.log"
    try:
        with demo_server(engines, log, "--samples", str(IMAGES)) as url:
            yield url
    except DemoServerError as error:
        pytest.fail(str(error))


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

    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)  # the README's docs/demo.png is this picture
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert page.external_requests == [], f"the page fetched from outside 127.0.0.1: {page.external_requests[:5]}"


BAD_UPLOADS = {
    "text.png": (b"this is text, not a picture\n", "could not be decoded"),
    "empty.png": (b"", "empty"),
    "corrupt.png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "could not be decoded"),  # PNG magic, no image
}


def test_bad_uploads_show_a_message_and_the_server_keeps_serving(page, tmp_path):
    choose_modes(page, {"ours"})
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
    choose_modes(page, {"ours"})
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
        "from deghost.apps.cli import main\n"
        f"sys.exit(main(['demo', '--engines', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "pip install 'deghost[demo]'" in done.stderr


def test_without_engines_the_command_says_how_to_build_them(tmp_path):
    done = subprocess.run([sys.executable, "-m", "deghost.apps.cli", "demo", "--engines", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "no manifest.json" in done.stderr and "deghost build" in done.stderr
