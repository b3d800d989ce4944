"""Real headless Chromium (Debian's `/usr/bin/chromium`, never a downloaded one), driven over
the DevTools protocol with the `websockets` package: console messages, exceptions, the DOM
and screenshots."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def flags(profile: Path) -> list[str]:
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1300,1400",
    ]


def dump_dom(url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran, via `--dump-dom`."""
    result = subprocess.run(
        [*flags(profile), "--dump-dom", url], capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Browser:
    """One Chromium with one page, its console errors collected as they happen."""

    def __init__(self, profile: Path):
        self.process = subprocess.Popen(
            [*flags(profile), "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.process.poll() is None, "chromium exited"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        self.errors: list[str] = []
        self.events: list[dict] = []
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(method)

    def _collect(self, message: dict) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(
                "console: "
                + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(
                "exception: "
                + str(details.get("exception", {}).get("description", details["text"]))
            )
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        if method:
            self.events.append(message)

    def call(self, method: str, _navigating: bool = False, **params) -> dict:
        """Send one command and wait for its answer. With `_navigating`, a command cut short
        by a navigation ("Inspected target navigated or closed") answers {} instead of failing."""
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == call_id:
                if _navigating and "error" in message:
                    return {}
                assert "error" not in message, message
                return message.get("result", {})
            self._collect(message)

    def pump(self, seconds: float) -> None:
        """Keep collecting events for a while."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._collect(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return

    def open(self, url: str, settle: float = 0.5) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, f"{url} did not load"
            self.pump(0.2)
        self.pump(settle)

    def navigate_by_script(self, expression: str) -> None:
        """Run a script that navigates away (its answer may be lost in the navigation)."""
        self.call("Runtime.evaluate", _navigating=True, expression=expression)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        """Evaluate until truthy (navigations in between are fine); return the value."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.call(
                "Runtime.evaluate", _navigating=True, expression=expression, returnByValue=True
            )
            value = result.get("result", {}).get("value")
            if "exceptionDetails" not in result and value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            self.pump(0.25)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
