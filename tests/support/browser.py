"""A real headless browser for tests: Debian's chromium, driven over the Chrome DevTools protocol.

``Browser.start(tmp)`` runs ``chromium --headless`` in a process group of its own
with a fresh profile under ``tmp`` and a DevTools port it picks itself (read back
from ``DevToolsActivePort``, so there is no port to collide on); ``page()`` opens a
tab. A tab ``goto``s a URL and waits for its load event, ``evaluate``s JavaScript in
the page, ``wait_for`` polls a JavaScript condition with a deadline (the page may
reload meanwhile: the status page refreshes itself), and takes PNG screenshots.
The protocol goes over aiohttp's WebSocket client (already a dependency): no
WebDriver, no extra package. ``stop()`` ends the browser by its process group,
never by name.

A machine without chromium fails the test with what to run (``make setup``
installs it), never skips it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

#: Seconds chromium gets to write its DevTools port, a page to load, a command to be answered.
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 30.0


class BrowserError(AssertionError):
    """The browser is missing, did not start, or a page did not do what a test waited for."""


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError("chromium is not installed: the status page test loads the page in a real browser; "
                       "run `make setup` (apt-get install -y chromium chromium-driver)")


class Page:
    """One tab over its own DevTools WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._loaded = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            body = message.json()
            if "id" in body:
                future = self._answers.pop(body["id"], None)
                if future is not None and not future.done():
                    future.set_result(body)
            elif body.get("method") == "Page.loadEventFired":
                self._loaded.set()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[ident] = future
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        async with asyncio.timeout(COMMAND_TIMEOUT):
            answer = await future
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message')}")
        return answer["result"]  # type: ignore[no-any-return]

    async def goto(self, url: str) -> None:
        self._loaded.clear()
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"{url} did not load: {result['errorText']}")
        async with asyncio.timeout(START_TIMEOUT):
            await self._loaded.wait()

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll ``expression`` until it is truthy; fail with ``what`` and the page's text after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.evaluate(expression)
            except BrowserError:
                value = None  # the page was reloading (its own refresh): ask again
            if value:
                return value
            if time.monotonic() > deadline:
                text = await self.evaluate("document.body ? document.body.innerText : ''")
                raise BrowserError(f"not seen within {timeout:.0f} s: {what}; the page showed:\n{text}")
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page at ``path``."""
        height = await self.evaluate("document.documentElement.scrollHeight")
        await self.send("Emulation.setDeviceMetricsOverride", width=1280, height=int(height) + 16,
                        deviceScaleFactor=1, mobile=False)
        shot = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()


class Browser:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, http: aiohttp.ClientSession) -> None:
        self._proc = proc
        self.port = port
        self._http = http

    @classmethod
    async def start(cls, tmp: Path) -> Browser:
        profile = tmp / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        log = open(tmp / "chromium.log", "ab")
        # Root in a container: chromium's sandbox needs user namespaces it may not have; the pages are the tests' own.
        proc = subprocess.Popen(
            [find_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--remote-debugging-port=0",
             "--remote-debugging-address=127.0.0.1", f"--user-data-dir={profile}", "about:blank"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while not (active.exists() and active.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                raise BrowserError(f"chromium did not start (see {tmp / 'chromium.log'})")
            await asyncio.sleep(0.1)
        port = int(active.read_text().splitlines()[0])
        return cls(proc, port, aiohttp.ClientSession())

    @contextlib.asynccontextmanager
    async def page(self) -> AsyncIterator[Page]:
        async with self._http.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as resp:
            target = await resp.json()
        ws = await self._http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        try:
            await page.send("Page.enable")
            yield page
        finally:
            await page.close()

    async def stop(self) -> None:
        await self._http.close()
        await asyncio.to_thread(_stop, self._proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the browser's process group (its renderers are in it), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
