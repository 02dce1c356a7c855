"""A self-contained interactive web map (one HTML file) of mining layers, zones and airstrips.

The page is built on MapLibre GL JS (WebGL: tens of thousands of polygons stay smooth), whose
``maplibre-gl.js``/``.css`` come from the ``maplibre`` PyPI package's wheel and are inlined together
with minewatch's own ``assets/map.js``/``map.css`` and the data (GeoJSON, WGS84, 6 decimals), so the
file opens from disk with no server and no CDN. Only the satellite basemap tiles are fetched, when
online; offline the map keeps a plain background.
"""

from __future__ import annotations

import html
import importlib.util
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from minewatch.atomic import write_text_atomic
from minewatch.errors import MinewatchError
from minewatch.webmap.layers import (
    PeriodStats,
    ZoneStats,
    new_mining,
    period_stats,
    read_airstrips,
    read_layers,
    read_zones,
    sort_periods,
    zone_stats,
)

ASSETS = Path(__file__).resolve().parent / "assets"
BASEMAPS = ("eox", "esri", "none")
M_PER_DEG = 111_320.0
COLORS = {
    "detections": "#ff8c1a",
    "detectionsLine": "#ffd08a",
    "newmining": "#ff2d95",
    "airstrips": "#ffffff",
    "zones": "#5ab4e6",
}
RAMP = ["#fff3b0", "#ffd166", "#f8961e", "#f3722c", "#e63946", "#9d0208", "#5c0011"]
EARTH_GENOME_CREDIT = "Detections: Earth Genome, Amazon Mining Watch (CC BY 4.0)"
AIRSTRIPS_CREDIT = "Airstrips: The Intercept Brasil / The New York Times / Earth Genome"


def maplibre_assets() -> tuple[str, str, str]:
    """(JS, CSS, version) of MapLibre GL JS, read from the ``maplibre`` package's wheel.

    The Python package is located without importing it (its import pulls in pydantic and jinja2,
    which the map does not need).
    """
    spec = importlib.util.find_spec("maplibre")
    if spec is None or not spec.submodule_search_locations:
        raise MinewatchError("maplibre", "the 'maplibre' package is missing (pip install 'maplibre>=0.3.6,<0.4')")
    d = Path(list(spec.submodule_search_locations)[0]) / "srcjs"
    js, css = d / "maplibre-gl.js", d / "maplibre-gl.css"
    if not js.exists() or not css.exists():
        raise MinewatchError(d, "maplibre-gl.js/.css not found in the 'maplibre' package")
    text = js.read_text(encoding="utf-8")
    head = text[:400]
    version = head.split("/blob/v", 1)[1].split("/", 1)[0] if "/blob/v" in head else "unknown"
    return text, css.read_text(encoding="utf-8"), version


@dataclass
class MapData:
    """Everything a map shows, as tables and geometries (WGS84)."""

    layer: gpd.GeoDataFrame
    """Detections: ``period``, ``area_ha``, ``footprint_ha``, ``score``…"""
    new: gpd.GeoDataFrame
    """Disjoint new-mining pieces with the period they first appear in (see ``layers.new_mining``)."""
    periods: list[str]
    stats: list[PeriodStats]
    zones: gpd.GeoDataFrame | None = None
    zone_stats: ZoneStats | None = None
    airstrips: gpd.GeoDataFrame | None = None
    credits: list[str] = field(default_factory=list)
    area_label: str = "Area"
    alerts: gpd.GeoDataFrame | None = None
    """Alerts (``minewatch alerts``): ``alert_id``, ``status``, ``period``, ``area_ha``, ``zone_name``…"""


ALERT_COLORS = {"confirmed": "#e31a1c", "provisional": "#ff9f1c"}
"""Alert outline colours by status (the map's alerts layer and the report's legend)."""


ESTIMATE_LABEL = "Mined area (estimate)"
FOOTPRINT_LABEL = "Footprint (whole patches)"


def area_label(kinds: set[str], published: bool) -> str:
    """What the map and report call the layer's ``area_ha``: an estimate, a published figure, or a footprint."""
    if kinds == {"estimate"}:
        return ESTIMATE_LABEL
    if kinds == {"footprint"} or (not kinds and not published):
        return FOOTPRINT_LABEL
    if "footprint" in kinds:
        return "Area (mined where stated, else footprint)"
    return "Mined area"


def build_map_data(
    layers: Sequence[str | Path] | gpd.GeoDataFrame,
    zones: str | Path | None = None,
    airstrips: str | Path | None = None,
    zone_id_field: str | None = None,
    zone_name_field: str | None = None,
    credits: Sequence[str] = (),
    alerts: str | Path | None = None,
) -> MapData:
    """Read the inputs and derive new/cumulative mining, per-period totals and per-zone areas."""
    layer = layers if isinstance(layers, gpd.GeoDataFrame) else read_layers(list(layers))
    if len(layer) == 0:
        raise MinewatchError("LAYER", "the mining layers contain no polygons")
    if "footprint_ha" not in layer.columns:
        from minewatch.webmap.layers import area_ha

        layer = layer.assign(footprint_ha=area_ha(layer.geometry))
    new = new_mining(layer)
    periods = sort_periods(layer["period"].tolist())
    cr = list(credits)
    kinds = set(layer["area_kind"]) if "area_kind" in layer.columns else set()
    published = "published" in kinds or (not kinds and not np.allclose(layer["area_ha"].to_numpy(), layer["footprint_ha"].to_numpy(), rtol=0.05))
    if published and EARTH_GENOME_CREDIT not in cr:
        cr.append(EARTH_GENOME_CREDIT)
    label = area_label(kinds, published)
    md = MapData(layer, new, periods, period_stats(layer, new), credits=cr, area_label=label)
    if zones is not None:
        md.zones = read_zones(zones, zone_id_field, zone_name_field)
        md.zone_stats = zone_stats(md.zones, layer, new)
    if airstrips is not None:
        md.airstrips = read_airstrips(airstrips)
        attr = md.airstrips.get("Attribution")
        if attr is not None and attr.astype(str).str.contains("Intercept").any() and AIRSTRIPS_CREDIT not in cr:
            md.credits.append(AIRSTRIPS_CREDIT)
    if alerts is not None:
        from minewatch.impacts.alerts import alerts_for_map

        md.alerts = alerts_for_map(alerts)
    return md


def _alert_props(a: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    out = []
    for r in a.itertuples(index=False):
        d: dict[str, Any] = {"id": str(r.alert_id), "st": str(r.status), "p": str(r.period), "a": _num(r.area_ha, 1),
                             "d0": str(r.date_start), "d1": str(r.date_end)}  # fmt: skip
        zn = getattr(r, "zone_name", None)
        if zn is not None and not (isinstance(zn, float) and not math.isfinite(zn)):
            d["z"] = str(zn)
        out.append(d)
    return out


# --- GeoJSON text -------------------------------------------------------------------------------
def _round_geoms(geoms: np.ndarray, precision: int, simplify_m: float) -> np.ndarray:
    g = geoms
    if simplify_m > 0:
        g = shapely.simplify(g, simplify_m / M_PER_DEG, preserve_topology=True)
    return shapely.transform(g, lambda c: np.round(c, precision))


def feature_collection(
    gdf: gpd.GeoDataFrame, props: list[dict[str, Any]], precision: int = 6, simplify_m: float = 0.0
) -> str:
    """GeoJSON FeatureCollection text with coordinates rounded to ``precision`` decimals.

    Built as text (``shapely.to_geojson`` per geometry) because it is several times faster than
    going through Python dicts for tens of thousands of features.
    """
    if len(gdf) == 0:
        return '{"type":"FeatureCollection","features":[]}'
    geoms = _round_geoms(gdf.geometry.to_numpy(), precision, simplify_m)
    texts = shapely.to_geojson(geoms)
    parts = [
        '{"type":"Feature","properties":' + json.dumps(p, separators=(",", ":")) + ',"geometry":' + t + "}"
        for p, t in zip(props, texts, strict=True)
        if t is not None
    ]
    return '{"type":"FeatureCollection","features":[' + ",".join(parts) + "]}"


def _num(x: float, nd: int) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), nd)


def _detection_props(layer: gpd.GeoDataFrame, index: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for p, a, f, s in zip(layer["period"], layer["area_ha"], layer["footprint_ha"], layer["score"], strict=True):
        d: dict[str, Any] = {"p": index[p], "a": _num(a, 2)}
        if abs(float(f) - float(a)) > 0.01 * max(float(f), 1e-9):
            d["f"] = _num(f, 1)
        if math.isfinite(float(s)):
            d["s"] = _num(s, 3)
        out.append(d)
    return out


def _points(gdf: gpd.GeoDataFrame, index: dict[str, int], whole: np.ndarray | None = None) -> str:
    """A point per polygon (inside it) for low zooms, as compact columns the page expands to GeoJSON.

    ``x``/``y`` lon/lat (4 decimals, ~11 m, plenty at the zooms where points show), ``p`` period index,
    ``r`` sqrt of outline ha (symbol radius), ``a`` stated area (ha), ``n`` 1 when the polygon is
    entirely new (see :func:`map_payload`). Columns instead of GeoJSON features: ~4× smaller.
    """
    pts = shapely.point_on_surface(gdf.geometry.to_numpy()) if len(gdf) else np.array([])
    xy = shapely.get_coordinates(pts) if len(gdf) else np.zeros((0, 2))
    cols = {
        "x": np.round(xy[:, 0], 4).tolist(),
        "y": np.round(xy[:, 1], 4).tolist(),
        "p": [index[p] for p in gdf["period"]],
        "r": np.round(np.sqrt(np.maximum(gdf["footprint_ha"].to_numpy(dtype=float), 0)), 1).tolist(),
        "a": np.round(gdf["area_ha"].to_numpy(dtype=float), 1).tolist(),
        "n": (np.zeros(len(gdf), int) if whole is None else whole.astype(int)).tolist(),
    }
    return json.dumps(cols, separators=(",", ":"))


def _airstrip_props(gdf: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    cols = [c for c in gdf.columns if c != "geometry" and c.lower() not in ("latitude", "longitude", "attribution")][:6]
    out = []
    for row in gdf[cols].itertuples(index=False):
        d = {}
        for c, v in zip(cols, row, strict=True):
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                continue
            sv = v.item() if isinstance(v, np.generic) else v
            if isinstance(sv, str) and len(sv) > 120:
                continue
            d[str(c)] = sv if isinstance(sv, (int, float, bool, str)) else str(sv)
        out.append(d)
    return out


def map_payload(md: MapData, basemap: str = "eox", precision: int = 6, simplify_m: float = 0.0, zone_simplify_m: float = 60.0) -> str:
    """The JSON the page reads (``<script id="mw-data">``), as text safe to inline in HTML."""
    if basemap not in BASEMAPS:
        raise MinewatchError("--basemap", f"must be one of {', '.join(BASEMAPS)}")
    index = {p: i for i, p in enumerate(md.periods)}
    new_df = md.new
    whole = np.zeros(len(md.layer), dtype=bool)
    if {"src", "whole"} <= set(new_df.columns):
        w = new_df["whole"].to_numpy(dtype=bool)
        whole[new_df["src"].to_numpy()[w]] = True
        new_df = new_df[~w]
    det_props = _detection_props(md.layer, index)
    for i in np.flatnonzero(whole):
        det_props[i]["n"] = 1
    det = feature_collection(md.layer, det_props, precision, simplify_m)
    new_props = [
        {"p": index[p], "a": _num(a, 2), **({"f": _num(f, 1)} if abs(f - a) > 0.01 * max(f, 1e-9) else {})}
        for p, a, f in zip(new_df["period"], new_df["area_ha"], new_df["footprint_ha"], strict=True)
    ]
    new = feature_collection(new_df, new_props, precision, simplify_m)
    detpts = _points(md.layer, index, whole)
    newpts = _points(new_df, index)
    zone_stats_js: list[dict[str, Any]] = []
    zones = '{"type":"FeatureCollection","features":[]}'
    if md.zones is not None and md.zone_stats is not None:
        det_t, cum_t = md.zone_stats.detected, md.zone_stats.cumulative
        for i, r in enumerate(md.zones.itertuples(index=False)):
            zone_stats_js.append(
                {
                    "id": r.zone_id,
                    "name": r.zone_name,
                    "country": str(getattr(r, "country", "") or ""),
                    "d": [round(float(v), 1) for v in det_t.iloc[i].to_numpy()],
                    "c": [round(float(v), 1) for v in cum_t.iloc[i].to_numpy()],
                }
            )
        zones = feature_collection(md.zones, [{"zi": i} for i in range(len(md.zones))], 5, zone_simplify_m)
    air = '{"type":"FeatureCollection","features":[]}'
    if md.airstrips is not None:
        air = feature_collection(md.airstrips, _airstrip_props(md.airstrips), 5)
    alerts = '{"type":"FeatureCollection","features":[]}'
    if md.alerts is not None and len(md.alerts):
        alerts = feature_collection(md.alerts, _alert_props(md.alerts), precision, simplify_m)
    bounds = [float(v) for v in md.layer.total_bounds]
    if not all(math.isfinite(v) for v in bounds):
        raise MinewatchError("LAYER", "layer bounds are not finite")
    meta = {
        "periods": md.periods,
        "stats": [
            {"period": s.period, "n": s.n_polygons, "area_ha": s.area_ha, "new_ha": s.new_ha, "cum_ha": s.cumulative_ha}
            for s in md.stats
        ],
        "zoneStats": zone_stats_js,
        "bounds": [[bounds[0], bounds[1]], [bounds[2], bounds[3]]],
        "basemap": basemap,
        "colors": COLORS,
        "alertColors": ALERT_COLORS,
        "ramp": _ramp(len(md.periods)),
        "areaLabel": md.area_label,
        "credits": " · ".join(["minewatch", *md.credits]),
        "attribution": "",
    }
    body = json.dumps(meta, separators=(",", ":"))[:-1]
    text = (body + ',"detections":' + det + ',"newmining":' + new + ',"detpoints":' + detpts + ',"newpoints":' + newpts
            + ',"zones":' + zones + ',"airstrips":' + air + ',"alerts":' + alerts + "}")
    return text.replace("</", "<\\/")


def _ramp(n: int) -> list[str]:
    """Up to ``len(RAMP)`` colours spread over ``n`` periods (at least two stops for the gradient)."""
    k = max(2, min(n, len(RAMP)))
    return [RAMP[round(i * (len(RAMP) - 1) / (k - 1))] for i in range(k)]


def _script(js: str) -> str:
    return "<script>\n" + js.replace("</script", "<\\/script") + "\n</script>"


def map_fragment(md: MapData, title: str, height: str = "100vh", **payload_kw: Any) -> tuple[str, str]:
    """(head, body) HTML of the map, to embed in a page (the report uses it). One map per page."""
    ml_js, ml_css, _ = maplibre_assets()
    css = (ASSETS / "map.css").read_text(encoding="utf-8")
    js = (ASSETS / "map.js").read_text(encoding="utf-8")
    payload = map_payload(md, **payload_kw)
    head = f"<style>\n{ml_css}\n</style>\n<style>\n{css}\n</style>"
    e = html.escape
    has_z, has_a = md.zones is not None, md.airstrips is not None
    has_al = md.alerts is not None and len(md.alerts) > 0
    basemap = payload_kw.get("basemap", "eox")
    legend = f"""
  <label><input type="checkbox" data-layer="detections" checked><span class="mw-sw" style="background:{COLORS['detections']}"></span>Detections in period</label>
  <label><input type="checkbox" data-layer="newmining"><span class="mw-sw" style="background:{COLORS['newmining']}"></span>New mining in period</label>
  <label><input type="checkbox" data-layer="cumulative"><span class="mw-sw" style="background:{RAMP[3]}"></span>Cumulative, by first period</label>
  <div id="mw-ramp"></div><div class="mw-ramp-labels"><span id="mw-ramp-lo"></span><span id="mw-ramp-hi"></span></div>
  <label{'' if has_z else ' hidden'}><input type="checkbox" data-layer="zones" checked><span class="mw-sw mw-line" style="border-color:{COLORS['zones']}"></span>Zones (click: mined area)</label>
  <label{'' if has_a else ' hidden'}><input type="checkbox" data-layer="airstrips" checked><span class="mw-sw mw-dot" style="background:{COLORS['airstrips']}"></span>Airstrips</label>
  <label{'' if has_al else ' hidden'}><input type="checkbox" data-layer="alerts" checked><span class="mw-sw mw-line" style="border-color:{ALERT_COLORS['confirmed']}"></span>Alerts: confirmed <span class="mw-sw mw-line" style="border-color:{ALERT_COLORS['provisional']}"></span>provisional</label>"""
    body = f"""<div class="mw-wrap" style="height:{e(height)}">
<div id="map"></div>
<div class="mw-panel">
 <h1>{e(title)}</h1>
 <div class="mw-note">{len(md.layer):,} polygons · {len(md.periods)} periods</div>
 <h2>Period</h2>
 <div class="mw-period-row"><button id="mw-prev" title="previous period (←)">◀</button><input type="range" id="mw-period" min="0" step="1" aria-label="period"><button id="mw-next" title="next period (→)">▶</button><span id="mw-period-label"></span><button id="mw-play" title="play">▶</button></div>
 <div id="mw-stats"></div>
 <h2>Layers</h2>
 <div class="mw-legend">{legend}
 </div>
 <h2>Basemap</h2>
 <select id="mw-basemap"><option value="eox"{' selected' if basemap == 'eox' else ''}>Sentinel-2 cloudless (EOX)</option><option value="esri"{' selected' if basemap == 'esri' else ''}>Esri World Imagery</option><option value="none"{' selected' if basemap == 'none' else ''}>None (plain)</option></select>
 <div id="mw-offline" hidden>Basemap tiles could not be loaded (offline?): plain background shown.</div>
 <div class="mw-note">Click a polygon, zone or airstrip for details; ← → change the period.</div>
</div>
</div>
<script id="mw-data" type="application/json">{payload}</script>
{_script(ml_js)}
{_script(js)}"""
    return head, body


def render_map_html(md: MapData, title: str = "minewatch: mining detections", **payload_kw: Any) -> str:
    """A complete standalone HTML page with the map filling the window."""
    head, body = map_fragment(md, title, height="100vh", **payload_kw)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>html,body{{margin:0;height:100%;}}</style>
{head}
</head><body>
{body}
</body></html>
"""


def write_map(out: str | Path, md: MapData, title: str = "minewatch: mining detections", **payload_kw: Any) -> Path:
    """Write the map page atomically; returns the path."""
    return write_text_atomic(out, render_map_html(md, title, **payload_kw))


def zone_table(md: MapData) -> pd.DataFrame:
    """Per-zone detected and cumulative mined area (ha) for each period, for CSV export and the report."""
    if md.zones is None or md.zone_stats is None:
        return pd.DataFrame()
    det = md.zone_stats.detected.add_prefix("detected_ha_")
    cum = md.zone_stats.cumulative.add_prefix("cumulative_ha_")
    names = md.zones.set_index("zone_id")["zone_name"]
    t = pd.concat([det, cum], axis=1)
    t.insert(0, "zone_name", names.reindex(t.index).to_numpy())
    return t
