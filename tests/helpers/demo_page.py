"""Driving `deghost demo` as a person does: the real command on 127.0.0.1 in a child process, and the
page's controls in Chromium (Playwright). Used by the browser test and benchmarks/demo_clicks.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RESULT_TIMEOUT_MS = 240_000  # tiny engines edit in seconds; a busy 2-core CI machine may take minutes
UI_TIMEOUT_MS = 180_000  # an upload or a re-render; generous for the same reason
SERVER_START_S = 240


class DemoServerError(RuntimeError):
    """The demo command exited or did not serve in time; the message holds the end of its log."""


@contextmanager
def demo_server(engines: Path, log: Path, *options: str) -> Iterator[str]:
    """`deghost demo --engines ENGINES OPTIONS…` on a free local port → its URL; stopped on exit."""
    port = free_port()
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "deghost.apps.cli", "demo", "--engines", str(engines),
                                   "--host", "127.0.0.1", "--port", str(port), *options],
                                  stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, server, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


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


def choose_modes(page, labels: set[str]) -> None:
    """Tick exactly the suppress modes named (ours, EOGI, Poisson)."""
    for label in ("ours", "EOGI", "Poisson"):
        box = page.locator("#modes").get_by_label(label, exact=True)
        box.check() if label in labels else box.uncheck()


def run_and_wait(page) -> None:
    """Click run and wait until this click's edit is done: the page first says "editing…" (seen by
    an observer set up before the click), then "done:" with the timings, and no "processing"
    overlay (Gradio lays one over the previous result's text while an event is pending)."""
    page.evaluate("""() => {
        window.deghostEditing = false;
        const status = document.querySelector('#status');
        const seen = () => { if (status.innerText.includes('editing')) window.deghostEditing = true; };
        window.deghostObserver?.disconnect();
        window.deghostObserver = new MutationObserver(seen);
        window.deghostObserver.observe(status, {subtree: true, childList: true, characterData: true});
    }""")
    page.locator("#run").click()
    page.wait_for_function("""() => {
        const status = document.querySelector('#status').innerText;
        const timings = document.querySelector('#timings').innerText;
        return window.deghostEditing && status.startsWith('done') && timings.includes('total')
            && !(status + timings).includes('processing');
    }""", timeout=RESULT_TIMEOUT_MS)


def shown(page, selector: str) -> None:
    """Wait until the image element is visible and its picture has loaded (non-zero natural width)."""
    page.locator(selector).wait_for(state="visible", timeout=UI_TIMEOUT_MS)
    page.wait_for_function("s => document.querySelector(s).naturalWidth > 0", arg=selector, timeout=UI_TIMEOUT_MS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise DemoServerError(f"deghost demo exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise DemoServerError(f"deghost demo did not serve {url} within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")
