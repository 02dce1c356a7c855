"""STAC API access against a loopback server on 127.0.0.1: retries, unreachable catalogs, the API code path.

The server speaks just enough STAC API (landing page with conformance, POST /search) to drive
pystac-client, can be told to answer HTTP 500 a given number of times first, and counts every
request; it refuses to serve more than a fixed number so that a retry loop cannot run away.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from minewatch.errors import MinewatchError
from minewatch.grid import Tile
from minewatch.imagery.engine import CompositeRequest, run_composites
from minewatch.imagery.sources import read_local_items, resolve_source
from minewatch.imagery.synthetic import SceneSpec, make_catalog
from minewatch.imagery.write import composite_path

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

TILE = Tile(21, 80, -28, 240, 10)
START, END = dt.date(2021, 1, 1), dt.date(2021, 12, 31)
MAX_REQUESTS = 40


class FakeStac:
    """State of the loopback STAC API: items served, failures to inject, requests seen."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.fail: dict[str, int] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        self.base = ""


def _handler(state: FakeStac) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _route(self, method: str) -> None:
            path = self.path.split("?")[0].rstrip("/") or "/"
            if method == "POST":
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                if len(state.requests) >= MAX_REQUESTS:
                    self._send(503, {"error": "request budget exhausted"})
                    return
                failing = state.fail.get(path, 0) > 0
                if failing:
                    state.fail[path] -= 1
                state.requests.append((method, path, 500 if failing else 200))
            if failing:
                self._send(500, {"code": "InternalServerError", "description": "injected failure"})
            elif path == "/":
                self._send(200, {
                    "type": "Catalog", "id": "fake", "stac_version": "1.0.0", "description": "loopback STAC API",
                    "conformsTo": [
                        "https://api.stacspec.org/v1.0.0/core",
                        "https://api.stacspec.org/v1.0.0/item-search",
                        "https://api.stacspec.org/v1.0.0/item-search#query",
                    ],
                    "links": [
                        {"rel": "self", "href": state.base + "/", "type": "application/json"},
                        {"rel": "root", "href": state.base + "/", "type": "application/json"},
                        {"rel": "search", "href": state.base + "/search", "type": "application/geo+json", "method": "POST"},
                        {"rel": "search", "href": state.base + "/search", "type": "application/geo+json", "method": "GET"},
                    ],
                })  # fmt: skip
            elif path == "/search":
                self._send(200, {"type": "FeatureCollection", "features": state.items, "links": []})
            else:
                self._send(404, {"code": "NotFound"})

        def do_GET(self) -> None:  # noqa: N802
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

    return Handler


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    l, b, r, t = TILE.bounds
    scenes = [SceneSpec(dt.date(2021, m, 5), cloud=0.3) for m in (2, 5, 8, 11)]
    return make_catalog(tmp_path_factory.mktemp("netcat"), epsg=TILE.epsg, bounds=(l - 600, b - 600, r + 600, t + 600), scenes=scenes, bands=("B2", "B3", "B4", "B11"), seed=7)


@pytest.fixture()
def server(catalog: Path) -> Iterator[FakeStac]:
    state = FakeStac(read_local_items(catalog))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_http_500s_are_retried_then_search_succeeds(server: FakeStac) -> None:
    server.fail = {"/": 2, "/search": 2}
    src = resolve_source(server.base, "l2a", retries=3, backoff=0.01)
    items = src.search(TILE.geometry_wgs84(), START, END, 100)
    assert len(items) == 4
    codes = [(m, p, c) for m, p, c in server.requests]
    assert codes.count(("GET", "/", 500)) == 2 and ("GET", "/", 200) in codes
    assert codes.count(("POST", "/search", 500)) == 2 and codes[-1] == ("POST", "/search", 200)


def test_persistent_500s_give_one_clear_error_after_bounded_retries(server: FakeStac) -> None:
    server.fail = {"/": 1000}
    src = resolve_source(server.base, "l2a", retries=2, backoff=0.01)
    with pytest.raises(MinewatchError) as e:
        src.search(TILE.geometry_wgs84(), START, END, 100)
    msg = e.value.oneline()
    assert "\n" not in msg and msg.startswith(server.base) and "unreachable" in msg
    assert len(server.requests) == 3  # the first try + 2 retries, then stop


def test_unreachable_catalog_is_one_line_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(MinewatchError) as e:
        resolve_source(url, "l2a", retries=1, backoff=0.0).search(TILE.geometry_wgs84(), START, END, 100)
    assert "\n" not in e.value.oneline() and "unreachable" in e.value.oneline() and url in e.value.oneline()


def test_cli_unreachable_catalog_exits_2_with_one_line(tmp_path: Path) -> None:
    from shapely.geometry import mapping

    from minewatch.cli.main import cli

    roi = tmp_path / "roi.geojson"
    roi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(TILE.geometry_wgs84().buffer(-1e-3))}))
    url = f"http://127.0.0.1:{_closed_port()}"
    res = CliRunner().invoke(cli, ["composite", "--roi", str(roi), "--start", "2021-01-01", "--end", "2021-12-31", "--out", str(tmp_path / "o"), "--source", url, "--tile-px", "240", "--retries", "1", "--scheduler", "synchronous", "--quiet"])
    assert res.exit_code == 2, res.output
    err_lines = [ln for ln in res.output.splitlines() if ln.startswith("minewatch: error:")]
    assert len(err_lines) == 1 and "unreachable" in err_lines[0]
    assert not list((tmp_path / "o" / "tiles").glob("*.tif")) if (tmp_path / "o" / "tiles").exists() else True


def test_api_source_and_local_file_give_the_same_composite(server: FakeStac, catalog: Path, tmp_path: Path) -> None:
    """The API code path (pystac-client search, retries) ends in the same pixels as the local file."""
    server.fail = {"/search": 1}
    req = CompositeRequest(start=START, end=END, bands=("B4", "B3", "B2", "B11"), level="L2A", max_scene_cloud=90)
    api = run_composites([TILE], req, resolve_source(server.base, "l2a", retries=2, backoff=0.01), tmp_path / "api", scheduler="synchronous", progress=False)
    loc = run_composites([TILE], req, resolve_source(str(catalog), "l2a"), tmp_path / "loc", scheduler="synchronous", progress=False)
    assert api.ok and loc.ok
    with rasterio.open(composite_path(tmp_path / "api", TILE.id)) as a, rasterio.open(composite_path(tmp_path / "loc", TILE.id)) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.read().any()
    assert ("POST", "/search", 500) in server.requests


def test_named_sources() -> None:
    import planetary_computer

    es = resolve_source("earth-search", "l2a")
    assert es.collection == "sentinel-2-c1-l2a" and dict(es.asset_keys)["B8A"] == "nir08" and dict(es.asset_keys)["SCL"] == "scl"
    assert not es.requester_pays and es.patch_url() is None
    pc = resolve_source("planetary-computer", "l2a")
    assert pc.collection == "sentinel-2-l2a" and dict(pc.asset_keys)["B4"] == "B04" and dict(pc.asset_keys)["B8A"] == "B8A"
    assert pc.patch_url() is planetary_computer.sign
    l1c = resolve_source("earth-search", "l1c")
    assert l1c.collection == "sentinel-2-l1c" and l1c.requester_pays and dict(l1c.asset_keys)["B10"] == "cirrus"
    with pytest.raises(MinewatchError, match="no Sentinel-2 L1C"):
        resolve_source("planetary-computer", "l1c")
    with pytest.raises(MinewatchError, match="--source"):
        resolve_source("no-such-catalog.json", "l2a")


def test_earth_search_l1c_without_aws_credentials_fails_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    src = resolve_source("earth-search", "l1c")
    req = CompositeRequest(start=START, end=END, level="L1C")
    with pytest.raises(MinewatchError, match="requester-pays") as e:
        run_composites([TILE], req, src, tmp_path / "out", scheduler="synchronous", progress=False)
    assert "AWS" in e.value.oneline() and not (tmp_path / "out").exists()


def test_asset_keys_inferred_for_unknown_catalogs() -> None:
    from minewatch.imagery.sources import infer_asset_keys

    assert infer_asset_keys(["B02", "B03", "B04", "B8A", "SCL", "visual"]) == {"B2": "B02", "B3": "B03", "B4": "B04", "B8A": "B8A", "SCL": "SCL"}
    assert infer_asset_keys(["red", "nir08", "scl", "cloud_mask"]) == {"B4": "red", "B8A": "nir08", "SCL": "scl", "CLOUDMASK": "cloud_mask"}
    assert infer_asset_keys(["b4", "b11"]) == {"B4": "b4", "B11": "b11"}
