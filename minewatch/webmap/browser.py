"""Drive headless Chromium through the Chrome DevTools Protocol over a pipe.

Why a pipe: ``--remote-debugging-pipe`` makes Chromium read CDP JSON messages (NUL-terminated) from
file descriptor 3 and write replies to descriptor 4, so no websocket client, no open TCP port and no
extra package are needed. Used by the tests (does the map render, are there console errors, does the
period control switch layers), by ``minewatch map --measure`` (load time) and for the optional PDF
export of the report.

Offline by design: every host name is resolved to "not found" (``--host-resolver-rules``), so a page
that asks for basemap tiles fails fast and deterministically instead of reaching the network.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minewatch.errors import MinewatchError

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # Software WebGL (SwiftShader through ANGLE): MapLibre needs WebGL and there is no GPU.
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable ($MINEWATCH_CHROMIUM first), or None."""
    env = os.environ.get("MINEWATCH_CHROMIUM")
    if env:
        return env
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    for name in CHROMIUM_CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


@dataclass
class ConsoleEntry:
    """One message the page produced: console API call, uncaught exception or browser log entry."""

    kind: str  # "console" | "exception" | "log"
    level: str  # "error", "warning", "log", ...
    text: str
    source: str = ""


@dataclass
class Browser:
    """A headless Chromium with one page target; use as a context manager.

    ``width``/``height`` set the window (and so the screenshot) size in CSS pixels.
    """

    width: int = 1280
    height: int = 800
    offline: bool = True
    executable: str | None = None
    messages: list[ConsoleEntry] = field(default_factory=list)

    def __enter__(self) -> Browser:
        exe = self.executable or find_chromium()
        if not exe:
            raise MinewatchError("chromium", "no Chromium found (bash scripts/setup.sh installs it as root with apt-get; or apt-get install chromium, or set MINEWATCH_CHROMIUM)")
        self._profile = tempfile.mkdtemp(prefix="minewatch-chromium-")
        flags = [*BASE_FLAGS, f"--user-data-dir={self._profile}", f"--window-size={self.width},{self.height}"]
        if self.offline:
            flags.append("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost")
        # Child reads commands on fd 3 and writes replies on fd 4.
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()

        def _remap() -> None:  # runs in the child between fork and exec
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self._proc = subprocess.Popen(
            [exe, *flags, "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_remap,  # noqa: PLW1509 - needed to place the pipe on fds 3/4
            close_fds=False,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._w = os.fdopen(to_child_w, "wb", buffering=0)
        self._r = os.fdopen(from_child_r, "rb", buffering=0)
        self._buf = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(domain, session=True)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for f in (self._w, self._r):
            f.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    # --- protocol -------------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r.fileno(), 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def _record(self, ev: dict[str, Any]) -> None:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.messages.append(ConsoleEntry("console", p.get("type", ""), text))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            self.messages.append(ConsoleEntry("exception", "error", text))
        elif method == "Log.entryAdded":
            e = p.get("entry", {})
            self.messages.append(ConsoleEntry("log", e.get("level", ""), e.get("text", ""), e.get("source", "")))
        self._events.append(ev)

    def send(self, method: str, params: dict[str, Any] | None = None, session: bool = False, timeout: float = 60) -> dict[str, Any]:
        """Send one CDP command and wait for its result (events seen meanwhile are recorded)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self._session
        self._w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self._record(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        """Wait for the next event named ``method`` (already-seen ones are consumed first)."""
        for i, ev in enumerate(self._events):
            if ev.get("method") == method:
                return self._events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            ev = self._read_message(deadline)
            self._record(ev)
            if ev.get("method") == method:
                self._events.remove(ev)
                return ev

    # --- page helpers ---------------------------------------------------------------------------
    def goto(self, url: str, timeout: float = 120) -> float:
        """Navigate and wait until the new document has loaded; return seconds from navigation to load.

        The load event alone is not proof: a late one from the previous document (about:blank) can
        arrive after navigation starts, so the document's URL and readyState are checked too.
        """
        self._events.clear()
        t0 = time.monotonic()
        self.send("Page.navigate", {"url": url}, session=True)
        deadline = t0 + timeout
        while True:
            self.wait_event("Page.loadEventFired", timeout=max(0.1, deadline - time.monotonic()))
            state = self.evaluate("[location.href, document.readyState]", timeout=10)
            if state and state[0] == url and state[1] == "complete":
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load")

    def wait_for(self, expression: str, timeout: float = 60, interval: float = 0.1) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value (TimeoutError otherwise).

        Short evaluations instead of one long awaited promise: a promise is never settled if its
        document goes away, and then Chromium never answers.
        """
        deadline = time.monotonic() + timeout
        while True:
            v = self.evaluate(expression, timeout=10)
            if v:
                return v
            if time.monotonic() > deadline:
                errs = "; ".join(e.text[:200] for e in self.errors()[:3])
                raise TimeoutError(f"waited {timeout:.0f} s for {expression!r}" + (f" (page errors: {errs})" if errs else ""))
            self.pump(interval)

    def wait_map_ready(self, timeout: float = 120) -> None:
        """Wait until a minewatch map page has drawn everything once (``body[data-ready]``)."""
        self.wait_for("!!(document.body && document.body.dataset.ready === '1')", timeout=timeout)

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        """Evaluate JavaScript (promises awaited) and return its JSON value; JS errors raise."""
        r = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "timeout": timeout * 1000},
            session=True,
            timeout=timeout + 5,
        )
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise RuntimeError(d.get("exception", {}).get("description") or d.get("text"))
        return r.get("result", {}).get("value")

    def pump(self, seconds: float) -> None:
        """Let the page run for a while, collecting console messages."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._record(self._read_message(deadline))
        except TimeoutError:
            pass

    def screenshot(self, path: str | Path) -> Path:
        """Save a PNG of the viewport."""
        data = self.send("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def print_pdf(self, path: str | Path) -> Path:
        """Save the page as an A4 PDF with backgrounds (used by ``minewatch report --pdf``)."""
        data = self.send(
            "Page.printToPDF",
            {"printBackground": True, "paperWidth": 8.27, "paperHeight": 11.69, "preferCSSPageSize": True},
            session=True,
            timeout=120,
        )["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[ConsoleEntry]:
        """Console errors and uncaught exceptions from page scripts (not failed network fetches)."""
        return [m for m in self.messages if m.level == "error" and not (m.kind == "log" and m.source == "network")]


def measure_load(page: str | Path, timeout: float = 300, width: int = 1280, height: int = 800) -> dict[str, Any]:
    """Open a map page in headless Chromium (offline) and time it.

    Returns ``load_s`` (navigation → load event: parsing the inlined data and scripts),
    ``ready_s`` (navigation → first ``idle`` of the map with every source tiled and drawn),
    ``rendered`` (detection features drawn in the viewport) and ``errors`` (console errors).
    Software WebGL on a CPU: a real browser with a GPU is faster.
    """
    url = Path(page).resolve().as_uri()
    with Browser(width=width, height=height) as b:
        load_s = b.goto(url, timeout=timeout)
        b.wait_map_ready(timeout=timeout)
        ready_ms = b.evaluate("window.minewatch.loadedMs")
        rendered = b.evaluate("window.minewatch.map.queryRenderedFeatures({layers: ['detections-fill', 'detections-pts']}).length")
        return {"load_s": load_s, "ready_s": ready_ms / 1000.0, "rendered": rendered, "errors": [e.text for e in b.errors()]}
