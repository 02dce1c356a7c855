"""Retries with backoff against a real misbehaving HTTP server on 127.0.0.1 (urllib and GDAL /vsicurl/)."""

from __future__ import annotations

import random
import urllib.error
import urllib.request

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from _reliability_server import fault_server
from minewatch.errors import MinewatchError
from minewatch.retry import RetriesExhausted, RetryPolicy, gdal_http_env, is_transient, retry_call

FAST = RetryPolicy(attempts=3, base_s=0.01, max_s=0.05)


def _fetch(url: str, timeout: float = 1.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        data = r.read()
        if len(data) != int(r.headers["Content-Length"]):  # pragma: no cover - urllib raises first
            raise ConnectionError("short read")
        return data


@pytest.fixture
def served(tmp_path):
    (tmp_path / "a.bin").write_bytes(bytes(range(256)) * 64)
    return tmp_path


@pytest.mark.parametrize("fault", ["500", "503", "429", "timeout", "drop"])
def test_transient_fault_then_success_is_retried(served, fault):
    with fault_server(served, {"a.bin": [fault, fault]}, stall_s=1.5) as srv:
        pauses = []
        data = retry_call(lambda: _fetch(f"{srv.url}/a.bin"), "a.bin", FAST, on_retry=lambda k, e, p: pauses.append((k, p)))
        assert data == (served / "a.bin").read_bytes()
        assert srv.requests_for("a.bin") == [fault, fault, "ok"]
        assert [k for k, _ in pauses] == [1, 2] and pauses[1][1] > pauses[0][1] * 0.9


def test_persistent_500_gives_one_clear_line(served):
    with fault_server(served, {"a.bin": ["always500"]}) as srv:
        url = f"{srv.url}/a.bin"
        with pytest.raises(RetriesExhausted) as e:
            retry_call(lambda: _fetch(url), url, FAST)
        assert e.value.oneline() == f"{url}: gave up after 3 attempts: HTTP 500 Internal Server Error"
        assert isinstance(e.value, MinewatchError) and len(srv.requests_for("a.bin")) == 3


def test_permanent_errors_are_not_retried(served):
    with fault_server(served) as srv:
        with pytest.raises(urllib.error.HTTPError) as e:
            retry_call(lambda: _fetch(f"{srv.url}/missing.bin"), "missing", FAST)
        assert e.value.code == 404 and len(srv.log) == 1
    with pytest.raises(MinewatchError, match="bad input"):
        retry_call(lambda: (_ for _ in ()).throw(MinewatchError("x", "bad input")), "x", FAST)


def test_backoff_grows_and_is_capped():
    p = RetryPolicy(attempts=8, base_s=1, factor=2, max_s=10, jitter=0.25)
    rng = random.Random(0)
    pauses = [p.pause(k, rng) for k in range(8)]
    assert all(0.75 * min(10, 2**k) <= d <= 1.25 * min(10, 2**k) for k, d in enumerate(pauses))
    assert max(pauses) <= 12.5


def test_gdal_messages_are_classified():
    from rasterio.errors import RasterioIOError

    assert is_transient(RasterioIOError("HTTP response code: 500"))
    assert is_transient(RasterioIOError("CURL error: transfer closed with 1000 bytes remaining to read"))
    assert not is_transient(RasterioIOError("HTTP response code: 404"))
    assert not is_transient(RasterioIOError("'x.tif' not recognized as a supported file format."))


def _cog(path, value: int = 7) -> None:
    arr = (np.arange(256 * 256, dtype=np.uint16).reshape(256, 256) % 5000 + value).astype(np.uint16)
    with rasterio.open(
        path, "w", driver="COG", width=256, height=256, count=1, dtype="uint16", crs="EPSG:32721",
        transform=Affine(10, 0, 600000, 0, -10, 9400000), BLOCKSIZE=128,
    ) as dst:  # fmt: skip
        dst.write(arr, 1)


def test_gdal_vsicurl_read_survives_500_and_dropped_connection(tmp_path):
    import pyogrio  # noqa: F401  (a second libgdal in the process: the cache of rasterio's must be cleared)

    _cog(tmp_path / "B04.tif")
    expected = rasterio.open(tmp_path / "B04.tif").read(1)

    def read(url: str) -> np.ndarray:
        with rasterio.Env(**gdal_http_env(timeout_s=2, retries=0)):
            with rasterio.open(url) as src:
                return src.read(1)

    with fault_server(tmp_path, {"B04.tif": ["500", "drop"]}) as srv:
        url = f"/vsicurl/{srv.url}/B04.tif"
        out = retry_call(lambda: read(url), url, RetryPolicy(attempts=4, base_s=0.01))
        np.testing.assert_array_equal(out, expected)
        assert srv.requests_for("B04.tif")[:2] == ["500", "drop"]
