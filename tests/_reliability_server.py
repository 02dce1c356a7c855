"""A real, misbehaving HTTP server on 127.0.0.1 for fault tests: static files with byte ranges, a
minimal STAC API (landing page, conformance, ``/search``), and scripted faults per path.

Bounded by construction: it stops itself after ``lifetime_s`` or ``max_requests``, each "timeout"
fault sleeps a fixed time, and the handler's socket has a timeout, so a test can never hang on it.

Faults are scripted per path fragment as a list consumed one request at a time, e.g.
``{"B04.tif": ["500", "500"]}`` answers the first two requests for any path containing ``B04.tif``
with HTTP 500 and serves it normally afterwards. Actions: ``"500"``/``"503"``/... (status),
``"timeout"`` (sleep ``stall_s``, then close without answering), ``"hang"`` (no answer until the
server stops: a half-dead server only a client timeout can escape), ``"drop"`` (headers with the
full Content-Length, half the body, then close), ``"ok"``. ``"always500"`` (etc.) repeats forever.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


class FaultServer:
    def __init__(
        self,
        root: Path,
        faults: dict[str, list[str]] | None = None,
        *,
        stall_s: float = 3.0,
        lifetime_s: float = 120.0,
        max_requests: int = 5000,
    ) -> None:
        self.root = Path(root)
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.stall_s = stall_s
        self.lifetime_s = lifetime_s
        self.max_requests = max_requests
        self.log: list[tuple[str, str, str]] = []  # (method, path, action)
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # socket timeout for reading the request
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                server._handle(self, head=True)

            def do_GET(self) -> None:
                server._handle(self)

            def do_POST(self) -> None:
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    # ---- lifecycle --------------------------------------------------------------------------------

    def _serve(self) -> None:
        deadline = time.monotonic() + self.lifetime_s
        self.httpd.timeout = 0.2
        while not self._stop.is_set() and time.monotonic() < deadline and len(self.log) < self.max_requests:
            self.httpd.handle_request()
        self.httpd.server_close()

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # ---- behaviour --------------------------------------------------------------------------------

    def set_faults(self, faults: dict[str, list[str]]) -> None:
        with self._mutex:
            self.faults = {k: list(v) for k, v in faults.items()}

    def _next_action(self, path: str) -> str:
        with self._mutex:
            for suffix, actions in self.faults.items():
                if suffix in path and actions:
                    a = actions[0]
                    if a.startswith("always"):
                        return a[len("always") :]
                    return actions.pop(0)
        return "ok"

    def requests_for(self, suffix: str) -> list[str]:
        """Actions taken for requests whose path contains ``suffix``, in order."""
        return [a for _, p, a in self.log if suffix in p]

    def _handle(self, h: BaseHTTPRequestHandler, head: bool = False) -> None:
        parsed = urlparse(h.path)
        path = parsed.path
        action = self._next_action(path)
        with self._mutex:
            self.log.append((h.command, path, action))
        if action in ("timeout", "hang"):
            if action == "hang":
                self._stop.wait(self.lifetime_s)
            else:
                time.sleep(self.stall_s)
            h.close_connection = True
            return
        if action.isdigit():
            body = json.dumps({"code": int(action), "description": "injected fault"}).encode()
            h.send_response(int(action))
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.send_header("Connection", "close")
            h.end_headers()
            if not head:
                h.wfile.write(body)
            h.close_connection = True
            return
        if path.rstrip("/") in ("", "/stac") or path.endswith("/conformance"):
            return self._json(h, self._landing(), head)
        if path.endswith("/search"):
            return self._json(h, self._search(h, parsed), head)
        file = (self.root / path.lstrip("/")).resolve()
        if not str(file).startswith(str(self.root.resolve())) or not file.is_file():
            return self._send(h, 404, b'{"code": 404}', "application/json", head)
        data = file.read_bytes()
        ctype = "application/json" if file.suffix == ".json" else "image/tiff"
        rng = h.headers.get("Range")
        if rng and (m := re.match(r"bytes=(\d+)-(\d*)", rng)):
            a = int(m.group(1))
            b = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            if a >= len(data):
                return self._send(h, 416, b"", ctype, head)
            return self._send(h, 206, data[a : b + 1], ctype, head, extra={"Content-Range": f"bytes {a}-{b}/{len(data)}"}, drop=action == "drop")
        return self._send(h, 200, data, ctype, head, drop=action == "drop")

    def _send(self, h: Any, status: int, body: bytes, ctype: str, head: bool, extra: dict | None = None, drop: bool = False) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        if drop:
            h.send_header("Connection", "close")
        h.end_headers()
        if head:
            return
        if drop:
            h.wfile.write(body[: max(1, len(body) // 2)])
            h.wfile.flush()
            h.close_connection = True
            try:
                import socket

                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        h.wfile.write(body)

    def _json(self, h: Any, obj: Any, head: bool) -> None:
        self._send(h, 200, json.dumps(obj).encode(), "application/json", head)

    # ---- a minimal STAC API over the items in root/items/*.json ---------------------------------

    def _landing(self) -> dict[str, Any]:
        return {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": "fault-stac",
            "description": "local STAC API for fault tests",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
                "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
                "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
            ],
            "links": [
                {"rel": "self", "href": f"{self.url}/", "type": "application/json"},
                {"rel": "root", "href": f"{self.url}/", "type": "application/json"},
                {"rel": "search", "href": f"{self.url}/search", "type": "application/geo+json", "method": "GET"},
                {"rel": "search", "href": f"{self.url}/search", "type": "application/geo+json", "method": "POST"},
            ],
        }

    def _search(self, h: Any, parsed: Any) -> dict[str, Any]:
        if h.command == "POST":
            n = int(h.headers.get("Content-Length") or 0)
            q = json.loads(h.rfile.read(n) or b"{}")
        else:
            q = {k: v[0] for k, v in parse_qs(parsed.query).items()}
            if "bbox" in q:
                q["bbox"] = [float(v) for v in q["bbox"].split(",")]
            if "collections" in q:
                q["collections"] = q["collections"].split(",")
        feats = []
        for f in sorted((self.root / "items").glob("*.json")):
            item = json.loads(f.read_text())
            if q.get("collections") and item.get("collection") not in q["collections"]:
                continue
            if q.get("bbox"):
                x0, y0, x1, y1 = q["bbox"]
                bx0, by0, bx1, by1 = item["bbox"]
                if bx1 < x0 or bx0 > x1 or by1 < y0 or by0 > y1:
                    continue
            if q.get("datetime") and "/" in q["datetime"]:
                a, b = q["datetime"].split("/")
                d = item["properties"]["datetime"]
                if (a not in ("", "..") and d < a) or (b not in ("", "..") and d > b):
                    continue
            feats.append(item)
        return {"type": "FeatureCollection", "features": feats, "links": [], "numberReturned": len(feats)}


@contextmanager
def fault_server(root: Path, faults: dict[str, list[str]] | None = None, **kw: Any) -> Iterator[FaultServer]:
    s = FaultServer(root, faults, **kw).start()
    try:
        yield s
    finally:
        s.stop()
