"""Where Sentinel-2 scenes come from: named STAC catalogs, any STAC API, or a local catalog file.

============================  =====  ================================  ===============================
``--source``                  level  collection                        what it needs
============================  =====  ================================  ===============================
``earth-search`` (default)    L2A    ``sentinel-2-c1-l2a``             nothing (free COGs on AWS)
``earth-search``              L1C    ``sentinel-2-l1c``                AWS credentials: JPEG2000 in a
                                                                       requester-pays bucket
``planetary-computer``        L2A    ``sentinel-2-l2a``                nothing; hrefs are signed with
                                                                       the ``planetary-computer`` package
any ``https://…`` STAC API    both   ``--collection`` or by level      whatever that API needs
``catalog.json`` / items      both   every item in the file            the asset files it points to
============================  =====  ================================  ===============================

Band names are canonical (``B1`` … ``B12``, ``B8A``, ``SCL``); each source maps them to its asset
keys (Earth Search uses common names such as ``red``/``nir08``, Planetary Computer ``B04``/``B8A``).
For unknown catalogs the mapping is inferred from the asset keys of the items found.

Network behaviour: every API request is retried with exponential backoff on connection errors and
HTTP 429/500/502/503/504 (``urllib3`` ``Retry``, POST included: STAC search is a POST); when the
catalog still cannot be reached the caller gets one :class:`~minewatch.errors.MinewatchError` line.
Pixel reads go through GDAL with ``GDAL_HTTP_MAX_RETRY``/``GDAL_HTTP_RETRY_DELAY`` set by the loader.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from minewatch.errors import MinewatchError
from minewatch.imagery.plan import BAND_RESOLUTION, normalise_band

EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"

COMMON_NAMES: dict[str, str] = {
    "B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "rededge1", "B6": "rededge2",
    "B7": "rededge3", "B8": "nir", "B8A": "nir08", "B9": "nir09", "B10": "cirrus", "B11": "swir16",
    "B12": "swir22", "SCL": "scl",
}  # fmt: skip
"""Earth Search v1 asset keys (STAC ``eo`` common names)."""

CLOUDMASK_KEYS = ("cloud_mask", "cloudmask", "CLOUDMASK", "MSK_CLDMSK", "cloud-mask")
"""Asset keys taken as a single-band L1C scene cloud mask (non-zero = cloud) when a catalog has one."""

RETRY_STATUS = (429, 500, 502, 503, 504)


def padded_key(band: str) -> str:
    """``B4`` → ``B04`` (the ESA / Planetary Computer spelling); ``B8A``/``SCL`` unchanged."""
    return f"B{int(band[1:]):02d}" if band[1:].isdigit() else band


def infer_asset_keys(asset_keys: Iterable[str]) -> dict[str, str]:
    """Map canonical bands to the asset keys a catalog uses, from the keys its items have.

    Tries, per band: the canonical name (``B4``), the zero-padded ESA name (``B04``), lower case
    variants, and the common name (``red``); the first key present wins. Cloud-mask assets named in
    :data:`CLOUDMASK_KEYS` map to ``CLOUDMASK``.
    """
    keys = list(asset_keys)
    present = set(keys)
    out: dict[str, str] = {}
    for band in BAND_RESOLUTION:
        for cand in (band, padded_key(band), band.lower(), padded_key(band).lower(), COMMON_NAMES[band]):
            if cand in present:
                out[band] = cand
                break
    for cand in CLOUDMASK_KEYS:
        if cand in present:
            out["CLOUDMASK"] = cand
            break
    return out


@dataclass(frozen=True)
class Source:
    """A resolved imagery source: where to search and how to read its assets."""

    name: str
    """What the user typed: ``earth-search``, ``planetary-computer``, a URL or a file path."""
    kind: str
    """``api`` (a STAC API searched over HTTP) or ``file`` (a local catalog / ItemCollection)."""
    location: str
    """API root URL or absolute file path."""
    level: str
    """``L2A`` or ``L1C``."""
    collection: str | None = None
    """Collection searched (APIs); None for local files (every item is a candidate)."""
    asset_keys: tuple[tuple[str, str], ...] = ()
    """Known (canonical band, asset key) pairs; empty = infer from the items found."""
    sign: bool = False
    """Planetary Computer: sign asset hrefs (SAS tokens) when reading."""
    requester_pays: bool = False
    """Earth Search L1C: the bucket bills the reader, AWS credentials needed."""
    retries: int = 5
    backoff: float = 1.0
    """Backoff factor (s): waits backoff × 2^(n-1) between attempts."""
    timeout: float = 60.0
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def key_map(self, items: Sequence[Mapping[str, Any]] = ()) -> dict[str, str]:
        """Canonical band → asset key for this source (inferred from ``items`` when not fixed)."""
        if self.asset_keys:
            return dict(self.asset_keys)
        keys: list[str] = []
        for it in items:
            keys.extend(k for k in it.get("assets", {}) if k not in keys)
        return infer_asset_keys(keys)

    def patch_url(self) -> Callable[[str], str] | None:
        """A per-href rewrite for the loader (Planetary Computer signing), or None."""
        if not self.sign:
            return None
        import planetary_computer

        return planetary_computer.sign

    def check_access(self) -> None:
        """Fail early, on one line, when the source cannot work in this environment."""
        if self.requester_pays and not aws_credentials_available():
            raise MinewatchError(
                "--level l1c",
                "Earth Search L1C assets are JPEG2000 files in a requester-pays S3 bucket: AWS credentials "
                "are needed (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE; reads are billed "
                "to that account), or use --level l2a (free, no account)",
            )

    def search(self, roi_wgs84: BaseGeometry, start: dt.date, end: dt.date, max_scene_cloud: float = 100.0) -> list[dict[str, Any]]:
        """STAC item dicts (absolute hrefs) intersecting the ROI in ``[start, end]`` (inclusive)."""
        if self.kind == "file":
            return read_local_items(self.location, self.level)
        return search_api(self, roi_wgs84, start, end, max_scene_cloud)


def aws_credentials_available() -> bool:
    """Best-effort check that GDAL/boto will find AWS credentials (env, profile or config file)."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if env.get("AWS_PROFILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        return True
    cred = Path(env.get("AWS_SHARED_CREDENTIALS_FILE", Path.home() / ".aws" / "credentials"))
    return cred.is_file()


def resolve_source(
    spec: str,
    level: str = "L2A",
    *,
    collection: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Source:
    """A :class:`Source` from a ``--source`` value and ``--level``; bad combinations → one-line error."""
    level = level.upper()
    if level not in ("L2A", "L1C"):
        raise MinewatchError("--level", f"must be l2a or l1c, got {level.lower()!r}")
    common = {"retries": retries, "backoff": backoff, "timeout": timeout}
    name = spec.strip()
    if name == "earth-search":
        coll = collection or ("sentinel-2-c1-l2a" if level == "L2A" else "sentinel-2-l1c")
        keys = {b: k for b, k in COMMON_NAMES.items() if not (level == "L2A" and b == "B10") and not (level == "L1C" and b == "SCL")}
        # MINEWATCH_EARTH_SEARCH_URL: a mirror or a local STAC API with the same collections (the README test uses one)
        url = os.environ.get("MINEWATCH_EARTH_SEARCH_URL") or EARTH_SEARCH_URL
        return Source(name, "api", url, level, coll, tuple(keys.items()), requester_pays=level == "L1C" and url == EARTH_SEARCH_URL, **common)
    if name == "planetary-computer":
        if level == "L1C":
            raise MinewatchError("--source planetary-computer", "Planetary Computer has no Sentinel-2 L1C collection; use --level l2a, or --source earth-search --level l1c (AWS credentials) or a local catalog")
        keys = {b: padded_key(b) for b in BAND_RESOLUTION if b != "B10"}
        return Source(name, "api", PLANETARY_COMPUTER_URL, level, collection or "sentinel-2-l2a", tuple(keys.items()), sign=True, **common)
    if "://" in name:
        if not name.startswith(("http://", "https://")):
            raise MinewatchError("--source", f"only http(s) STAC API URLs are supported, got {name!r}")
        coll = collection or ("sentinel-2-l2a" if level == "L2A" else "sentinel-2-l1c")
        return Source(name, "api", name.rstrip("/"), level, coll, **common)
    path = Path(name).expanduser()
    if not path.exists():
        raise MinewatchError("--source", f"{name!r} is not earth-search, planetary-computer, an http(s) STAC API URL or an existing catalog file")
    if path.is_dir():
        cand = [p for p in (path / "catalog.json", path / "collection.json") if p.exists()]
        if not cand:
            raise MinewatchError(path, "folder has no catalog.json or collection.json")
        path = cand[0]
    return Source(name, "file", str(path.resolve()), level, collection, **common)


def default_level(spec: str) -> tuple[str, str]:
    """The level to use when ``--level`` is not given, and why.

    L2A for catalogs on the network: free from Earth Search and Planetary Computer with no account
    (Earth Search L1C is requester-pays). A local catalog: the level its items state (so L1C
    scenes are masked as L1C and L2A scenes with their own SCL), else L2A.
    """
    name = spec.strip()
    if name in ("earth-search", "planetary-computer") or "://" in name:
        return "L2A", "the default for public catalogs (free, no account; --level l1c for top-of-atmosphere imagery)"
    try:
        path = Path(resolve_source(name, "L2A").location)
        levels = {declared_level(d) for d in read_local_items(path)}
    except MinewatchError:
        return "L2A", "the default"
    levels.discard(None)
    if len(levels) == 1:
        lvl = next(iter(levels))
        return str(lvl), f"the level the items of {name} state"
    if len(levels) > 1:
        raise MinewatchError(name, f"catalog mixes processing levels {sorted(map(str, levels))}; give --level to pick one")
    return "L2A", f"the default (the items of {name} do not state a level; --level l1c if they are top-of-atmosphere)"


# --------------------------------------------------------------------------------------------------
# Local catalogs
# --------------------------------------------------------------------------------------------------


def read_local_items(path: str | os.PathLike[str], level: str | None = None) -> list[dict[str, Any]]:
    """Every item of a local static catalog / collection (recursively) or ItemCollection file, as
    dicts with absolute asset hrefs. Items declaring another processing level than ``level`` are an error."""
    import pystac

    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MinewatchError(path, f"not a readable STAC JSON file ({e})") from None
    try:
        if raw.get("type") == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(raw, root=None, preserve_dict=False))
            base = path.parent
            for it in items:
                for a in it.assets.values():
                    if "://" not in a.href and not os.path.isabs(a.href):
                        a.href = str((base / a.href).resolve())
        elif raw.get("type") == "Feature":
            items = [pystac.Item.from_file(str(path))]
        else:
            cat = pystac.read_file(str(path))
            items = list(cat.get_items(recursive=True))  # type: ignore[union-attr]
    except MinewatchError:
        raise
    except Exception as e:  # pystac raises several types for malformed STAC
        raise MinewatchError(path, f"not a valid STAC catalog, collection or ItemCollection ({type(e).__name__}: {e})") from None
    out = []
    for it in items:
        it.make_asset_hrefs_absolute()
        d = it.to_dict(include_self_link=False, transform_hrefs=False)
        if level is not None:
            declared = declared_level(d)
            if declared is not None and declared != level.upper():
                raise MinewatchError(path, f"item {d['id']} is {declared} but --level is {level.lower()}")
        out.append(d)
    return out


def declared_level(item: Mapping[str, Any]) -> str | None:
    """L1C/L2A when an item says which, else None.

    In order: ``processing:level``, ``s2:product_type`` (``S2MSI1C``/``S2MSI2A``), a scene
    classification asset (``SCL``: only L2A products have one), then the collection id or the
    item id naming the level (``sentinel-2-l2a``, ``S2B_..._L2A``, ``MSIL1C``). Why so many: a
    catalog that states none of them would otherwise be composited at whatever ``--level`` says,
    e.g. L2A scenes masked with the L1C threshold rule instead of their own SCL.
    """
    import re

    props = item.get("properties", {}) or {}
    pl = str(props.get("processing:level", "")).upper()
    pt = str(props.get("s2:product_type", "")).upper()
    if pl in ("L1C", "L2A"):
        return pl
    if pt.endswith("1C"):
        return "L1C"
    if pt.endswith("2A"):
        return "L2A"
    if any(str(k).lower() == "scl" for k in (item.get("assets") or {})):
        return "L2A"
    for name in (item.get("collection"), item.get("id")):
        m = re.search(r"(?<![A-Z0-9])(?:MSI)?(L1C|L2A)(?![A-Z0-9])", str(name or "").upper().replace("-", "_"))
        if m:
            return m.group(1)
    return None


# --------------------------------------------------------------------------------------------------
# STAC APIs
# --------------------------------------------------------------------------------------------------


def retry_policy(retries: int, backoff: float) -> Any:
    """urllib3 ``Retry``: connection errors and 429/5xx, every method (search is a POST), backoff."""
    from urllib3.util.retry import Retry

    return Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=RETRY_STATUS,
        allowed_methods=None,
        respect_retry_after_header=True,
        raise_on_status=True,
    )


def open_api(source: Source) -> Any:
    """A ``pystac_client.Client`` for the source with the retry policy; unreachable → MinewatchError."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    io = StacApiIO(max_retries=retry_policy(source.retries, source.backoff), timeout=source.timeout)
    try:
        return Client.open(source.location, stac_io=io)
    except Exception as e:
        raise unreachable(source, e) from None


def unreachable(source: Source, e: BaseException) -> MinewatchError:
    """The one-line error for a catalog that could not be reached or answered badly."""
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if len(reason) > 200:
        reason = reason[:200] + "…"
    return MinewatchError(
        source.location,
        f"STAC catalog unreachable or failing after {source.retries} retries ({type(e).__name__}: {reason}); "
        "check the URL and your network, or use a local catalog file with --source",
    )


def search_geometry(roi_wgs84: BaseGeometry, max_vertices: int = 200) -> BaseGeometry:
    """The geometry sent to the API: the ROI, or its convex hull when it has many vertices (APIs cap
    request sizes; the per-tile footprint test afterwards is exact anyway)."""
    import shapely

    return roi_wgs84 if shapely.get_num_coordinates(roi_wgs84) <= max_vertices else roi_wgs84.convex_hull


def search_api(source: Source, roi_wgs84: BaseGeometry, start: dt.date, end: dt.date, max_scene_cloud: float) -> list[dict[str, Any]]:
    """Search a STAC API (one paged search for the whole ROI) and return item dicts."""
    client = open_api(source)
    query = {"eo:cloud_cover": {"lte": max_scene_cloud}} if max_scene_cloud < 100 else None
    try:
        search = client.search(
            collections=[source.collection] if source.collection else None,
            intersects=mapping(search_geometry(roi_wgs84)),
            datetime=f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z",
            query=query,
            limit=100,
        )
        items = list(search.items_as_dicts())
    except MinewatchError:
        raise
    except Exception as e:
        raise unreachable(source, e) from None
    for it in items:
        declared = declared_level(it)
        if declared is not None and declared != source.level:
            raise MinewatchError(source.location, f"collection {source.collection} holds {declared} items, not {source.level}; pick --level {declared.lower()} or another --collection")
    return items
