"""Retry transient network failures with exponential backoff, then fail clearly.

Why one helper: a continental run makes hundreds of thousands of HTTP requests (STAC searches, COG
range reads). Some fail for reasons that go away (HTTP 5xx, 429, timeouts, a connection dropped
mid-download); some never will (404, 403, a corrupt file). Retrying the first kind a few times with
growing, jittered pauses turns a flaky night into a finished run; retrying the second kind only
wastes time, so those are raised at once. When the attempts run out, :class:`RetriesExhausted`
carries one line (what was fetched, how many attempts, the last error) that a stage records as
that tile's failure (:meth:`minewatch.runs.RunContext.tile_failed`) before moving on.

GDAL's own retry (``GDAL_HTTP_MAX_RETRY``) only covers 429/502/503/504 responses, not HTTP 500 or a
connection cut mid-body, hence a retry around the whole read. GDAL also *caches* a failed HEAD for
the life of the process, so a plain retry of ``rasterio.open`` fails again without a request:
:func:`retry_call` clears GDAL's /vsicurl/ cache before retrying a GDAL error. :func:`gdal_http_env`
sets GDAL's timeouts so that a stalled server cannot hang a read forever (without them a read from
a server that stops answering waited indefinitely in our tests).
"""

from __future__ import annotations

import random
import socket
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, TypeVar

from minewatch.errors import MinewatchError

T = TypeVar("T")

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying: timeouts, rate limits and server-side failures."""
_TRANSIENT_TEXT = (
    "http response code: 5",  # GDAL /vsicurl/: "HTTP response code: 500"
    "http response code: 429",
    "http response code: 408",
    "timed out",
    "timeout",
    "connection reset",
    "connection refused",
    "connection aborted",
    "broken pipe",
    "transfer closed",  # curl: body shorter than Content-Length
    "recv failure",
    "remote end closed",
    "remotedisconnected",
    "incompleteread",
    "server disconnected",
    "temporary failure in name resolution",
    "read error",
    "curl error",
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``attempts`` in all, pauses ``base_s * factor**k`` capped at ``max_s``, ±``jitter``."""

    attempts: int = 4
    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.25
    """Fractional random spread of each pause, so that many workers do not retry in lockstep."""

    def pause(self, k: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``k`` (0-based)."""
        d = min(self.max_s, self.base_s * self.factor**k)
        r = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, d * (1.0 + r))


class RetriesExhausted(MinewatchError):
    """A transient failure that did not go away: ``where`` is what was fetched."""

    def __init__(self, where: str, attempts: int, last: BaseException) -> None:
        self.attempts = attempts
        self.last = last
        why = describe_error(last)
        root = _transient_cause(last)
        if root is not None and root is not last and not is_transient_text(str(last)):
            why += f" (caused by {describe_error(root)})"
        super().__init__(where, f"gave up after {attempts} attempts: {why}")


def describe_error(e: BaseException) -> str:
    """One line for an exception: its type and first line (HTTP errors with their status)."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def _transient_cause(e: BaseException) -> BaseException | None:
    """The innermost exception in ``e``'s chain whose own text says network trouble (for messages:
    "Chunk and warp failed" means little; the curl error under it says what happened)."""
    found, seen = None, set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if is_transient_text(str(cur)) or http_status(cur) is not None:
            found = cur
        cur = cur.__cause__ or cur.__context__
    return found


def http_status(e: BaseException) -> int | None:
    """The HTTP status carried by an exception from urllib, requests or pystac-client, if any."""
    for attr in ("code", "status_code", "status"):
        v = getattr(e, attr, None)
        if isinstance(v, int) and 100 <= v < 600:
            return v
    resp = getattr(e, "response", None)
    v = getattr(resp, "status_code", None)
    return v if isinstance(v, int) else None


def is_transient(e: BaseException) -> bool:
    """Whether an error is worth retrying (network/server trouble) rather than a real problem."""
    status = http_status(e)
    if status is not None:
        return status in RETRY_STATUS
    if isinstance(e, (TimeoutError, socket.timeout, ConnectionError, HTTPException)):
        return True
    if isinstance(e, urllib.error.URLError):
        return isinstance(e.reason, (OSError, TimeoutError)) or is_transient_text(str(e.reason))
    if isinstance(e, MinewatchError) and not isinstance(e, RetriesExhausted):
        return False  # bad input says so clearly; retrying cannot fix it
    cause = e.__cause__ or e.__context__
    return is_transient_text(str(e)) or (cause is not None and cause is not e and is_transient(cause))


def is_transient_text(text: str) -> bool:
    t = text.lower()
    if "/vsicurl/" in t and "not recognized as being in a supported file format" in t:
        # GDAL's words for a remote header cut short by a dropped connection; a real bad file
        # costs only a few quick retries before the same message is reported.
        return True
    return any(s in t for s in _TRANSIENT_TEXT)


def clear_gdal_http_cache() -> bool:
    """Forget what GDAL's /vsicurl/ remembers (failed HEADs, cached blocks); True if it could.

    rasterio exposes no binding for this, so the C function ``VSICurlClearCache`` is called through
    ctypes on every libgdal loaded in the process (Linux: listed in /proc/self/maps). Every one,
    because wheels bundle their own copy: with pyogrio imported there are two, and clearing only
    the first (pyogrio's) left rasterio's cache stale — found by running the test files together.
    """
    try:
        import ctypes

        import rasterio  # noqa: F401  (loads its libgdal)

        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "libgdal" in ln and ln.split()[-1].startswith("/")})
    except (OSError, ImportError):
        return False
    done = False
    for lib in libs:
        if lib not in _VSICURL_CLEAR:
            try:
                _VSICURL_CLEAR[lib] = getattr(ctypes.CDLL(lib), "VSICurlClearCache", None)
            except OSError:
                _VSICURL_CLEAR[lib] = None
        fn = _VSICURL_CLEAR[lib]
        if fn is not None:
            fn()
            done = True
    return done


_VSICURL_CLEAR: dict[str, Any] = {}


def _is_gdal_error(e: BaseException) -> bool:
    return type(e).__module__.startswith("rasterio") or "vsicurl" in str(e).lower()


def retry_call(
    fn: Callable[[], T],
    what: str,
    policy: RetryPolicy | None = None,
    *,
    transient: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], Any] = time.sleep,
    on_retry: Callable[[int, BaseException, float], Any] | None = None,
) -> T:
    """Call ``fn()``; on a transient error wait and call again, up to ``policy.attempts`` times.

    Non-transient errors propagate at once, unchanged. After the last failed attempt raises
    :class:`RetriesExhausted` naming ``what`` (a URL, an asset, a tile), chained to the last error.
    ``on_retry(attempt, error, pause_s)`` is called before each pause (for logs and progress bars).
    """
    policy = policy or RetryPolicy()
    for k in range(policy.attempts):
        try:
            return fn()
        except Exception as e:
            if not transient(e):
                raise
            if k == policy.attempts - 1:
                raise RetriesExhausted(what, policy.attempts, e) from e
            pause = policy.pause(k)
            if _is_gdal_error(e):
                clear_gdal_http_cache()
            if on_retry is not None:
                on_retry(k + 1, e, pause)
            sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


def gdal_http_env(timeout_s: int = 30, retries: int = 2) -> dict[str, str]:
    """GDAL config options for remote COG reads: bounded waits, a few low-level retries, no dir listing."""
    return {
        "GDAL_HTTP_TIMEOUT": str(timeout_s),
        "GDAL_HTTP_CONNECTTIMEOUT": str(min(timeout_s, 10)),
        "GDAL_HTTP_MAX_RETRY": str(retries),
        "GDAL_HTTP_RETRY_DELAY": "1",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    }
