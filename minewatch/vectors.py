"""One reader for every vector input (mining layers, zones, airstrips, truth, review inputs).

Why one reader: a layer in metres with no CRS used to be read as WGS84 degrees by every command
that took layers, and each command then said something plausible and wrong ("0 zones with
mining", NaN areas, an empty map) with exit 0. Every vector file now goes through
:func:`read_vector`, which places its coordinates or refuses on one line naming the file.

How the CRS of a file is decided:

* the file declares one (a ``.prj``, a GeoPackage/GeoParquet CRS, a GeoJSON ``crs`` member naming
  a CRS other than WGS84): that one, and the file is reprojected to WGS84;
* the file declares none, or only WGS84 (GDAL reports WGS84 for every GeoJSON without a ``crs``
  member, as RFC 7946 says it is): its coordinates must fit lon/lat (x within ±180, y within ±90,
  all finite). If they do not, they are projected coordinates whose CRS nobody stated: with
  ``--crs`` (:func:`assumed_crs`) they are read in that CRS, otherwise the file is refused.
* a geographic ``--crs`` (e.g. SIRGAS 2000, EPSG:4674) is also applied to lon/lat files that
  declare none.

After reprojection the coordinates must again be finite lon/lat (a wrong ``--crs`` far outside its
area of use gives infinities, which are refused rather than drawn).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from minewatch.errors import MinewatchError

if TYPE_CHECKING:
    import geopandas as gpd

_ASSUMED: contextvars.ContextVar[Any] = contextvars.ContextVar("minewatch_assumed_crs", default=None)

LAT_NAMES = ("latitude", "lat", "y")
LON_NAMES = ("longitude", "lon", "lng", "long", "x")


def parse_crs(text: str | None, where: str = "--crs") -> Any:
    """A pyproj CRS from user input (``EPSG:32721``, ``32721``, WKT, PROJ); one-line error."""
    if text is None or str(text).strip() == "":
        return None
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    s = str(text).strip()
    try:
        return CRS.from_user_input(int(s) if s.isdigit() else s)
    except CRSError:
        raise MinewatchError(where, f"not a CRS pyproj knows: {s!r} (give e.g. EPSG:32721)") from None


@contextlib.contextmanager
def assumed_crs(crs: Any) -> Iterator[None]:
    """Within the block, vector files that state no CRS and do not fit lon/lat are read in ``crs``."""
    token = _ASSUMED.set(parse_crs(crs) if isinstance(crs, (str, int)) else crs)
    try:
        yield
    finally:
        _ASSUMED.reset(token)


def crs_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Click decorator: add ``--crs`` to a command and read its vector inputs under :func:`assumed_crs`."""
    import click

    @click.option(
        "--crs", "assume_crs", default=None, metavar="CRS",
        help="CRS of vector inputs that state none and are not lon/lat degrees (e.g. EPSG:32721); "
        "files that declare a CRS keep theirs.",
    )  # fmt: skip
    @functools.wraps(fn)
    def wrapper(*args: Any, assume_crs: str | None = None, **kwargs: Any) -> Any:
        with assumed_crs(parse_crs(assume_crs)):
            return fn(*args, **kwargs)

    return wrapper


def _is_wgs84(crs: Any) -> bool:
    from pyproj import CRS

    return CRS.from_user_input(crs).equals(CRS.from_epsg(4326), ignore_axis_order=True)


def _bounds(gdf: gpd.GeoDataFrame) -> tuple[float, float, float, float] | None:
    """Bounds of every coordinate (None: no geometry); NaN when some coordinate is not finite."""
    import shapely

    geoms = gdf.geometry.to_numpy()
    geoms = geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]
    if len(geoms) == 0:
        return None
    coords = shapely.get_coordinates(geoms)
    if not np.isfinite(coords).all():
        return (math.nan,) * 4
    return (float(coords[:, 0].min()), float(coords[:, 1].min()), float(coords[:, 0].max()), float(coords[:, 1].max()))


def fits_lonlat(b: tuple[float, float, float, float] | None) -> bool:
    """True when bounds are finite and within lon ±180, lat ±90 (None: nothing to check)."""
    if b is None:
        return True
    x0, y0, x1, y1 = b
    return all(map(math.isfinite, b)) and -180.0 <= x0 and x1 <= 180.0 and -90.0 <= y0 and y1 <= 90.0


def _describe(b: tuple[float, float, float, float]) -> str:
    if not all(map(math.isfinite, b)):
        return "non-finite coordinates (NaN or infinity)"
    return f"coordinates x {b[0]:.6g} to {b[2]:.6g}, y {b[1]:.6g} to {b[3]:.6g}"


def place(gdf: gpd.GeoDataFrame, where: str | Path, crs: Any = None) -> gpd.GeoDataFrame:
    """Decide the CRS of a freshly read frame (see the module docstring) and return it in WGS84."""
    assume = crs if crs is not None else _ASSUMED.get()
    declared = gdf.crs
    b = _bounds(gdf)
    if declared is None or _is_wgs84(declared):
        if fits_lonlat(b):
            if assume is not None and assume.is_geographic and not _is_wgs84(assume):
                gdf = gdf.set_crs(assume, allow_override=True)
            elif declared is not None and declared.to_epsg() == 4326:
                return gdf  # the usual case: nothing to copy or transform
            else:
                return gdf.set_crs(4326, allow_override=True)
        elif assume is not None and not assume.is_geographic:
            gdf = gdf.set_crs(assume, allow_override=True)
        elif assume is not None:
            raise MinewatchError(where, f"{_describe(b)} (outside lon ±180 / lat ±90) but --crs {assume.to_string()} is geographic; give the projected CRS the numbers are in")  # type: ignore[arg-type]
        else:
            raise MinewatchError(where, f"{_describe(b)}: outside lon ±180 / lat ±90, so these are projected coordinates with no CRS stated; give --crs (e.g. --crs EPSG:32721) or reproject the file to WGS84")  # type: ignore[arg-type]
    elif declared.is_geographic and not fits_lonlat(b):
        raise MinewatchError(where, f"{_describe(b)} do not fit lon/lat although the file declares {declared.name}")  # type: ignore[arg-type]
    out = gdf.to_crs(4326)
    b2 = _bounds(out)
    if not fits_lonlat(b2):
        raise MinewatchError(where, f"reprojecting from {gdf.crs.name} gives {_describe(b2)} (not lon/lat): the declared or --crs CRS does not match the numbers")  # type: ignore[arg-type,union-attr]
    return out


def read_points_csv(path: str | Path) -> gpd.GeoDataFrame:
    """Points from a CSV with latitude/longitude columns (WGS84 degrees); out-of-range rows refused."""
    import geopandas as gpd
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - pandas raises many types; one line
        raise MinewatchError(path, f"cannot read as CSV ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    df = df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed")])
    low = {str(c).lower(): c for c in df.columns}
    lat = next((low[c] for c in LAT_NAMES if c in low), None)
    lon = next((low[c] for c in LON_NAMES if c in low), None)
    if lat is None or lon is None:
        raise MinewatchError(path, f"CSV needs latitude and longitude columns (columns: {list(df.columns)})")
    x, y = pd.to_numeric(df[lon], errors="coerce"), pd.to_numeric(df[lat], errors="coerce")
    bad = x.isna() | y.isna() | (y.abs() > 90) | (x.abs() > 180)
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise MinewatchError(path, f"{int(bad.sum())} rows have missing or out-of-range coordinates (first: row {first + 2}, {lon}={df[lon].iloc[[first]].tolist()[0]!r}, {lat}={df[lat].iloc[[first]].tolist()[0]!r}); CSV coordinates must be WGS84 degrees")
    return gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(x, y), crs=4326)


def read_vector(path: str | Path, crs: Any = None, *, csv_points: bool = False) -> gpd.GeoDataFrame:
    """Any vector file GeoPandas reads (GeoParquet by suffix; CSV points with ``csv_points``), in WGS84.

    ``crs`` (else the :func:`assumed_crs` in force) is used only for files that state no CRS and
    whose coordinates are not lon/lat. Every failure is a :class:`MinewatchError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise MinewatchError(path, "file not found")
    if path.is_dir():
        raise MinewatchError(path, "is a folder, expected a vector file (GeoJSON, GeoParquet, GeoPackage, Shapefile)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        if not csv_points:
            raise MinewatchError(path, "a CSV is not a vector layer here (give GeoJSON, GeoParquet, GeoPackage or Shapefile)")
        return read_points_csv(path)
    import geopandas as gpd

    try:
        gdf = gpd.read_parquet(path) if suffix in (".parquet", ".geoparquet") else gpd.read_file(path)
    except Exception as e:  # noqa: BLE001 - pyogrio/pyarrow raise many types; report one line
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise MinewatchError(path, f"cannot read as a vector layer ({msg})") from None
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry is None:
        raise MinewatchError(path, "no geometry column")
    return place(gdf, path, parse_crs(crs) if isinstance(crs, (str, int)) else crs)


__all__ = ["assumed_crs", "crs_option", "fits_lonlat", "parse_crs", "place", "read_points_csv", "read_vector"]
