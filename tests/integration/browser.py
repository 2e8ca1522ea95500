"""A small Chrome DevTools Protocol driver for Debian's headless Chromium (no browser download).

Only what the web page test needs: navigate, evaluate JavaScript, set a file input, screenshot.
Every wait is bounded.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import websocket

from devrun import processes
from tests import needs

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1100,900",
    "--remote-debugging-port=0",
]


class Page:
    """One browser tab, driven over its DevTools websocket."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    def send(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Call a CDP method and return its result (events in between are dropped)."""
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if time.monotonic() > deadline:
                raise TimeoutError(method)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises are awaited)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        """Poll `expression` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true within {timeout:g} s: {expression}")
            time.sleep(0.05)
        return value

    def goto(self, url: str) -> None:
        """Open `url` and wait until the document and its scripts have loaded."""
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def set_files(self, selector: str, *paths: Path) -> None:
        """Choose `paths` in the file input `selector`, as a user would in the file dialog."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def screenshot(self, path: Path) -> None:
        """Save the whole page (not only the visible part) as a PNG."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.send(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip
        )["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))


def chromium_binary() -> str:
    """Chromium on PATH; without it the browser tests skip (and fail under `CI=true`)."""
    return needs.binary(
        "chromium",
        "chromium-browser",
        "google-chrome",
        how="install Chromium to run the web page tests "
        "(Debian/Ubuntu: apt-get install chromium; `make test` does it when run as root)",
    )


@contextmanager
def chromium(log: Path) -> Iterator[Page]:
    """A headless Chromium with one tab, stopped (and its profile removed) afterwards."""
    profile = Path(tempfile.mkdtemp(prefix="mlqueue-chromium-"))
    argv = [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", "about:blank"]
    proc = processes.spawn(argv, log=log)
    try:
        port_file = profile / "DevToolsActivePort"
        processes.wait_until(lambda: _has_port(port_file), 30, "chromium DevTools", proc)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        # No Origin header: Chromium refuses DevTools websockets from unlisted origins.
        ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        try:
            page = Page(ws)
            page.send("Page.enable")
            page.send("DOM.enable")
            yield page
        finally:
            ws.close()
    finally:
        processes.stop(proc)
        _remove(profile, proc)


def _has_port(port_file: Path) -> bool:
    try:
        return len(port_file.read_text().split()) >= 2
    except OSError:
        return False


def _remove(profile: Path, proc: subprocess.Popen[bytes]) -> None:
    # Chromium's helpers may still be writing for a moment after the group was killed.
    for _ in range(20):
        shutil.rmtree(profile, ignore_errors=True)
        if not profile.exists():
            return
        time.sleep(0.1)
