"""Reading and writing mining layers and tables, each output stating the parameters that made it.

Readers accept minewatch's own files and the published Amazon Mining Watch layers:

* patch scores (``minewatch detect``): GeoParquet, one row per patch (``geometry``, ``score``,
  ``period``, optional ``tile``/``row``/``col``/``epsg``/``score_<member>``/``valid_frac``);
* mining layers: GeoParquet or GeoJSON polygons with ``period`` and ``area_ha`` (minewatch) or the
  published ``Mined area (ha)`` with a ``year`` code (``202400`` = 2024, ``202502`` = 2025 Q2), the
  period coming from a ``period``/``year`` column or from a ``mining_YYYYQQ`` file name.

Where the parameters go (every output file carries them):

* GeoParquet: the Arrow schema metadata key ``minewatch`` (JSON), beside GeoPandas' ``geo`` key;
* GeoJSON (always WGS84, RFC 7946): a top-level foreign member ``"minewatch"`` of the
  FeatureCollection (kept in the file itself; GDAL ignores it, ``json.load`` sees it);
* CSV: a sidecar ``<name>.csv.meta.json`` (CSV has nowhere else to put it).

:func:`read_metadata` reads any of the three back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from minewatch import __version__, periods
from minewatch.atomic import atomic_path, write_json_atomic
from minewatch.errors import MinewatchError
from minewatch.postprocess.geom import EQUAL_AREA_CRS, area_ha, polygonal

PUBLISHED_AREA_FIELD = "Mined area (ha)"
"""The per-polygon sub-patch mined-area estimate carried by the published layers."""

META_KEY = "minewatch"

def normalize_period(value: object, source: str | Path = "period") -> str:
    """A period label: ``2024`` (a year) or ``2024Q3`` (a quarter); ``""`` for a missing value.

    Accepts every form :func:`minewatch.periods.parse_period` reads (labels, integers, the upstream
    code ``YYYYQQ``: ``202400`` → ``2024``, ``202502`` → ``2025Q2``); anything else (``2024Q5``,
    ``"last year"``) is a one-line error naming ``source``.
    """
    if periods.is_missing(value):
        return ""
    return periods.label(value, source)


def period_from_filename(path: str | Path) -> str | None:
    """``mining_202400_simplified.geojson`` → ``"2024"``; ``None`` when the name has no ``YYYYQQ`` code."""
    p = periods.from_filename(path)
    return p.label if p is not None else None


def period_sort_key(p: str) -> tuple[int, int]:
    """Time order: a year sorts before its quarters (``2024`` < ``2024Q1`` < ``2025``)."""
    return periods.period_key(p)


def sort_periods(values: Sequence[str]) -> list[str]:
    """Unique non-empty periods in time order."""
    return periods.sort_periods(values)


# --------------------------------------------------------------------------------------------- read


def read_vector(path: str | Path, crs: Any = None) -> gpd.GeoDataFrame:
    """Any vector file GeoPandas reads (GeoParquet by suffix), in WGS84; one-line errors.

    The one vector reader (:func:`minewatch.vectors.read_vector`): coordinates that do not fit
    lon/lat in a file that states no CRS are refused unless ``--crs`` says what they are.
    """
    from minewatch.vectors import read_vector as _read

    return _read(path, crs)


def periods_for(gdf: pd.DataFrame, path: Path, period: str | None) -> pd.Series:
    """Each feature's period: ``period`` if given, else a ``period``/``year`` column, else the file name."""
    if period is not None:
        return pd.Series(periods.label(period, "--period"), index=gdf.index)
    for col in ("period", "year"):
        if col in gdf.columns:
            values = gdf[col]
            uniq = pd.unique(values.to_numpy(dtype=object))
            labels = {v: normalize_period(v, f"{path} (column {col!r})") for v in uniq if not periods.is_missing(v)}
            found = values.map(lambda v: "" if periods.is_missing(v) else labels[v])
            break
    else:
        from_name = period_from_filename(path)
        if from_name is None:
            raise MinewatchError(path, "no period: add a 'period' column or a YYYYQQ code to the file name (mining_202400_…)")
        found = pd.Series(from_name, index=gdf.index)
    if (found == "").any():
        raise MinewatchError(path, f"{int((found == '').sum())} features have an empty period")
    return found


def read_patches(path: str | Path, period: str | None = None) -> gpd.GeoDataFrame:
    """Patch scores as written by ``minewatch detect`` (see the module docstring), validated.

    Returns WGS84 rows with at least ``geometry``, ``score`` (float) and ``period`` (normalised).
    """
    path = Path(path)
    gdf = read_vector(path)
    if "score" not in gdf.columns:
        raise MinewatchError(path, f"no 'score' column (columns: {[c for c in gdf.columns if c != 'geometry']})")
    score = pd.to_numeric(gdf["score"], errors="coerce")
    if score.isna().any():
        raise MinewatchError(path, f"{int(score.isna().sum())} patches have a missing or non-numeric score")
    if ((score < 0) | (score > 1)).any():
        raise MinewatchError(path, "scores must be probabilities in [0, 1]")
    geom_ok = gdf.geometry.notna() & ~gdf.geometry.is_empty
    if not geom_ok.all():
        raise MinewatchError(path, f"{int((~geom_ok).sum())} patches have no geometry")
    kinds = set(gdf.geom_type.unique())
    if kinds - {"Polygon", "MultiPolygon"}:
        raise MinewatchError(path, f"patch footprints must be polygons, found {sorted(kinds)}")
    out = gdf.copy()
    out["score"] = score.astype(float)
    if len(gdf) == 0 and period is None and "period" not in gdf.columns:
        out["period"] = pd.Series([], dtype=object)
    else:
        out["period"] = periods_for(gdf, path, period).to_numpy()
    return out.reset_index(drop=True)


PATCH_COLUMNS = frozenset({"score", "tile", "row", "col"})
"""Columns that mark a file of patch scores (``minewatch detect``), not a mining layer."""


def refuse_patch_scores(path: Path, gdf: gpd.GeoDataFrame) -> None:
    """A one-line error for ``minewatch detect``'s patch scores given where a mining layer belongs:
    every patch ≥ ``--min-score``, overlapping by half, with no threshold applied, would be summed
    (or drawn) as mining several times over."""
    if PATCH_COLUMNS <= set(gdf.columns):
        raise MinewatchError(path, "holds patch scores from 'minewatch detect', not mining polygons: "
                                   "run 'minewatch postprocess' on it and give its mining.parquet")


MINED_FIELDS = (PUBLISHED_AREA_FIELD, "mined_ha")
"""Per-polygon mined-area fields: the published layers' figure and minewatch's own estimate."""


def auto_area_field(gdf: pd.DataFrame) -> str | None:
    """The mined-area field a layer offers: ``Mined area (ha)``, else ``mined_ha`` when every polygon
    has one (detect output older than the estimate has NaN), else the footprint ``area_ha``, else None."""
    if PUBLISHED_AREA_FIELD in gdf.columns:
        return PUBLISHED_AREA_FIELD
    if "mined_ha" in gdf.columns and len(gdf) and np.isfinite(pd.to_numeric(gdf["mined_ha"], errors="coerce").to_numpy(dtype=float)).all():
        return "mined_ha"
    return "area_ha" if "area_ha" in gdf.columns else None


def read_layer(path: str | Path, area_field: str | None = "auto", period: str | None = None) -> gpd.GeoDataFrame:
    """One mining layer (WGS84) with ``period``, ``footprint_ha`` and ``stated_ha``.

    * ``footprint_ha``: the polygon's own area, equal-area (:data:`EQUAL_AREA_CRS`);
    * ``stated_ha``: the layer's per-polygon mined-area estimate, from ``area_field``; with ``"auto"``
      the published ``Mined area (ha)`` when present, else minewatch's estimate ``mined_ha``, else
      minewatch's footprint ``area_ha``, else NaN (:func:`auto_area_field`)
      (``None``: always NaN). A named field that is missing is an error naming the file.

    Score columns (``score_max``, ``score_mean``, ``n_patches``) are kept when present; ``source``
    is the file name and ``fid`` the row in the file. Invalid geometries are repaired
    (polygonal parts kept); empty ones are dropped.
    """
    path = Path(path)
    gdf = read_vector(path)
    refuse_patch_scores(path, gdf)
    fid = np.arange(len(gdf))
    keep = (gdf.geometry.notna() & ~gdf.geometry.is_empty).to_numpy()
    gdf, fid = gdf[keep], fid[keep]
    kinds = set(gdf.geom_type.unique())
    if kinds - {"Polygon", "MultiPolygon"}:
        raise MinewatchError(path, f"a mining layer must hold polygons, found {sorted(kinds)}")
    if area_field == "auto":
        area_field = auto_area_field(gdf)
    elif area_field is not None and area_field not in gdf.columns:
        cols = [c for c in gdf.columns if c != "geometry"]
        raise MinewatchError(path, f"--area-field {area_field!r} not among the columns {cols}")
    if area_field is not None:
        stated = pd.to_numeric(gdf[area_field], errors="coerce").to_numpy(dtype=float)
        if np.isnan(stated).any():
            raise MinewatchError(path, f"{int(np.isnan(stated).sum())} features have no numeric {area_field!r}")
    else:
        stated = np.full(len(gdf), np.nan)
    labels = periods_for(gdf, path, period)
    geoms = polygonal(gdf.geometry.to_numpy())
    data: dict[str, Any] = {"period": labels.to_numpy(), "stated_ha": stated}
    for c in ("n_patches", "score_max", "score_mean"):
        if c in gdf.columns:
            data[c] = gdf[c].to_numpy()
    data["source"] = path.name
    data["fid"] = fid
    out = gpd.GeoDataFrame(data, geometry=geoms, crs=4326)
    out["footprint_ha"] = area_ha(out.geometry)
    out.attrs["area_field"] = area_field
    return out.reset_index(drop=True)


def read_layers(paths: Sequence[str | Path], area_field: str | None = "auto") -> gpd.GeoDataFrame:
    """Several layers (e.g. one per period) concatenated, rows in time order of their periods."""
    if not paths:
        raise MinewatchError("LAYER", "give at least one mining layer")
    from minewatch.scheduling import map_threads

    unique: dict[Path, str | Path] = {}
    for p in paths:  # the same file named twice is one layer, not twice the mining
        unique.setdefault(Path(p).resolve(), p)
    paths = list(unique.values())
    parts = map_threads(lambda p: read_layer(p, area_field=area_field), paths)  # pyogrio and GEOS release the GIL
    fields = {p.attrs.get("area_field") for p in parts}
    gdf = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=4326)
    order = {p: i for i, p in enumerate(sort_periods(gdf["period"].tolist()))}
    gdf = gdf.iloc[np.argsort(gdf["period"].map(order).to_numpy(), kind="stable")].reset_index(drop=True)
    gdf.attrs["area_fields"] = sorted(str(f) for f in fields)  # more than one: stated_ha mixes them, per layer
    gdf.attrs["area_field"] = fields.pop() if len(fields) == 1 else None
    return gdf


# -------------------------------------------------------------------------------------------- write


def make_metadata(command: str, params: Mapping[str, Any], inputs: Sequence[str | Path] = ()) -> dict[str, Any]:
    """The parameter record every output carries: what made it, from what, with which settings."""
    return {
        "producer": f"minewatch {__version__}",
        "command": command,
        "parameters": dict(params),
        "inputs": [str(p) for p in inputs],
        "crs": "EPSG:4326",
        "area_crs": EQUAL_AREA_CRS,
    }


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_geoparquet(gdf: gpd.GeoDataFrame, target: str | Path, meta: Mapping[str, Any]) -> Path:
    """GeoParquet (WGS84) with ``meta`` as JSON under the schema metadata key ``minewatch``."""
    gdf = gdf.to_crs(4326) if gdf.crs is not None and not gdf.crs.equals("EPSG:4326") else gdf
    with atomic_path(target) as tmp:
        gdf.to_parquet(tmp, index=False)
        table = pq.read_table(tmp)
        md = dict(table.schema.metadata or {})
        md[META_KEY.encode()] = json.dumps(meta, default=_json_default).encode()
        pq.write_table(table.replace_schema_metadata(md), tmp)
    return Path(target)


def write_geojson(gdf: gpd.GeoDataFrame, target: str | Path, meta: Mapping[str, Any]) -> Path:
    """RFC 7946 GeoJSON (WGS84) with ``meta`` as the FeatureCollection's ``minewatch`` member."""
    gdf = gdf.to_crs(4326) if gdf.crs is not None and not gdf.crs.equals("EPSG:4326") else gdf
    fc = json.loads(gdf.to_json(na="null", drop_id=True, to_wgs84=False))
    fc = {"type": "FeatureCollection", META_KEY: dict(meta), "features": fc["features"]}
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(fc, default=_json_default, separators=(",", ":")), encoding="utf-8")
    return Path(target)


def write_csv(df: pd.DataFrame, target: str | Path, meta: Mapping[str, Any]) -> Path:
    """CSV plus its parameter sidecar ``<name>.csv.meta.json``."""
    target = Path(target)
    with atomic_path(target) as tmp:
        df.to_csv(tmp, index=False)
    write_json_atomic(target.with_name(target.name + ".meta.json"), dict(meta))
    return target


def write_layer(gdf: gpd.GeoDataFrame, out_dir: str | Path, stem: str, meta: Mapping[str, Any]) -> list[Path]:
    """A layer as ``<stem>.parquet`` and ``<stem>.geojson`` in ``out_dir`` (both WGS84, both with meta)."""
    out_dir = Path(out_dir)
    return [write_geoparquet(gdf, out_dir / f"{stem}.parquet", meta), write_geojson(gdf, out_dir / f"{stem}.geojson", meta)]


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``minewatch`` parameter record of an output (GeoParquet, GeoJSON or CSV sidecar)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".geoparquet"):
        md = pq.read_schema(path).metadata or {}
        raw = md.get(META_KEY.encode())
        if raw is None:
            raise MinewatchError(path, "no minewatch metadata in the Parquet schema")
        return json.loads(raw)
    if suffix in (".geojson", ".json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if META_KEY not in doc:
            raise MinewatchError(path, "no 'minewatch' member in the GeoJSON")
        return doc[META_KEY]
    side = path.with_name(path.name + ".meta.json")
    if not side.exists():
        raise MinewatchError(path, f"no metadata sidecar {side.name}")
    return json.loads(side.read_text(encoding="utf-8"))
