"""A shareable, self-contained HTML report of a run (optionally also PDF).

The report puts in one file what a reporter needs to cite a result: the interactive map, charts of
mined area per period (also written as PNGs), the most affected zones, the model card (model,
thresholds, metrics), the imagery dates and cloud statistics, the caveats of the method, and the
credits. It reads whatever a run folder holds (``mining*.parquet``/``.geojson`` layers, ``card.json``
or a model named in ``manifest.json``, composite STAC items) and says "not available" for the rest.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from minewatch import __version__
from minewatch.atomic import write_text_atomic
from minewatch.errors import MinewatchError
from minewatch.webmap import charts
from minewatch.webmap.layers import EQUAL_AREA_CRS
from minewatch.postprocess.mined import mined_note
from minewatch.webmap.map import ESTIMATE_LABEL, FOOTPRINT_LABEL, MapData, build_map_data, map_fragment

LAYER_SUFFIXES = (".parquet", ".geoparquet", ".geojson", ".gpkg")
NOT_AVAILABLE = "not available"


@dataclass
class RunInputs:
    """What a run folder provides to the report (paths may also come from command-line options)."""

    run_dir: Path | None
    layers: list[Path] = field(default_factory=list)
    zones: Path | None = None
    airstrips: Path | None = None
    card: dict[str, Any] | None = None
    card_path: Path | None = None
    manifest: dict[str, Any] | None = None
    imagery: list[dict[str, Any]] = field(default_factory=list)


# --- discovery ----------------------------------------------------------------------------------
def _read_manifest(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "manifest.json"
    if not path.exists():
        return None
    try:
        from minewatch.runs import load_manifest

        return load_manifest(run_dir)
    except (ImportError, MinewatchError):
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
            return m if isinstance(m, dict) else None
        except (ValueError, UnicodeDecodeError):
            return None


def _paths_in(obj: Any) -> Iterable[Path]:
    """Every path-like string found in a manifest's inputs/parameters (values or ``{"path": …}``)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "path" and isinstance(v, str):
                yield Path(v)
            else:
                yield from _paths_in(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _paths_in(v)
    elif isinstance(obj, str) and ("/" in obj or obj.endswith((".json", ".geojson", ".parquet"))):
        yield Path(obj)


def find_layers(run_dir: Path) -> list[Path]:
    """Mining layers in a run folder: ``mining*`` files (top level, then one level down).

    One file per stem (GeoParquet preferred over GeoJSON of the same name), and ``mining_simplified``
    left out when ``mining`` is there (postprocess writes both, same polygons); patch scores
    (``patches*``) and timeline/zone tables are not mining layers.
    """
    for pattern in ("mining*", "*/mining*"):
        found: dict[Path, Path] = {}
        for p in sorted(run_dir.glob(pattern)):
            if p.suffix.lower() not in LAYER_SUFFIXES or not p.is_file():
                continue
            key = p.with_suffix("")
            if key not in found or p.suffix.lower() in (".parquet", ".geoparquet"):
                found[key] = p
        # postprocess writes mining.* and a display copy mining_simplified.*: the same polygons
        for key in [k for k in found if k.name.endswith("_simplified")]:
            if key.with_name(key.name[: -len("_simplified")]) in found:
                del found[key]
        if found:
            return sorted(found.values())
    return []


def _find_named(run_dir: Path, manifest: dict[str, Any] | None, words: Sequence[str]) -> Path | None:
    for p in sorted(run_dir.glob("*")):
        if p.is_file() and p.suffix.lower() in (".geojson", ".parquet", ".gpkg", ".csv") and any(w in p.stem.lower() for w in words):
            return p
    if manifest:
        for key in ("parameters", "inputs"):
            for p in _paths_in(manifest.get(key, {})):
                if any(w in p.name.lower() for w in words) and p.is_file():
                    return p
    return None


def load_card(run_dir: Path | None, manifest: dict[str, Any] | None, card: Path | None = None) -> tuple[dict[str, Any] | None, Path | None]:
    """The model card: ``--card``, ``RUN_DIR/card.json``, ``RUN_DIR/model/card.json``, or the model in the manifest."""
    candidates: list[Path] = []
    if card is not None:
        if not card.exists():  # a shipped model name such as "default"
            try:
                from minewatch.models.package import resolve_package_path

                card = resolve_package_path(str(card))
            except MinewatchError:
                pass
        candidates.append(card / "card.json" if card.is_dir() else card)
    if run_dir is not None:
        candidates += [run_dir / "card.json", run_dir / "model" / "card.json"]
    if manifest:
        for key in ("inputs", "parameters"):
            section = manifest.get(key, {}) or {}
            model = section.get("model") if isinstance(section, dict) else None
            paths = list(_paths_in(model)) if model is not None else []
            if isinstance(model, str) and "/" not in model:
                try:
                    from minewatch.models.package import resolve_package_path

                    paths.append(resolve_package_path(model))
                except MinewatchError:
                    pass
            for p in paths:
                candidates.append(p / "card.json" if p.is_dir() else p)
    for c in candidates:
        if c.name.endswith(".json") and c.exists():
            try:
                d = json.loads(c.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise MinewatchError(c, f"model card is not valid JSON ({e})") from None
            if isinstance(d, dict):
                return d, c
    if card is not None:
        raise MinewatchError(card, "no card.json there")
    return None, None


def _clear_stats(path: Path) -> dict[str, float]:
    """Mean clear observations per pixel and share of pixels never seen clear (from an overview)."""
    import rasterio

    with rasterio.open(path) as src:
        f = max(1, min(src.width, src.height) // 256)
        a = src.read(1, out_shape=(max(1, src.height // f), max(1, src.width // f))).astype(float)
    return {"clear_mean": float(a.mean()), "never_clear_pct": float((a == 0).mean() * 100)}


def imagery_summary(folders: Sequence[Path], limit: int = 5000) -> list[dict[str, Any]]:
    """Per composite tile: dates, level, scenes, cloud filter, clear-observation statistics.

    Reads the STAC Items written by ``minewatch composite`` (``tiles/<tile>.json``) in the given
    folders; tiles without an item are read from their GeoTIFF tags (``START_DATE``…).
    """
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for folder in folders:
        if folder.is_file():  # one GeoTIFF (the demo mosaic, detect --imagery FILE.tif): its tags
            for r in _imagery_from_tags(folder, limit):
                if r["tile"] not in seen:
                    seen.add(r["tile"])
                    rows.append(r)
            continue
        items = sorted(folder.glob("tiles/*.json")) + sorted(folder.glob("*/tiles/*.json")) + sorted(folder.glob("*.json"))
        for p in items[:limit]:
            try:
                d = json.loads(p.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError, OSError):
                continue
            if not isinstance(d, dict) or d.get("type") != "Feature" or "properties" not in d:
                continue
            pr = d["properties"]
            tile = str(pr.get("minewatch:tile") or d.get("id"))
            if tile in seen:
                continue
            seen.add(tile)
            row: dict[str, Any] = {
                "tile": tile,
                "start": str(pr.get("start_datetime") or pr.get("datetime") or "")[:10],
                "end": str(pr.get("end_datetime") or pr.get("datetime") or "")[:10],
                "level": pr.get("processing:level", ""),
                "scenes": len(pr.get("minewatch:scenes", []) or []) or None,
                "max_scene_cloud": pr.get("minewatch:max_scene_cloud", pr.get("eo:cloud_cover")),
            }
            clear = d.get("assets", {}).get("clear_count", {}).get("href")
            if clear:
                cp = (p.parent / clear).resolve()
                if cp.exists():
                    try:
                        row.update(_clear_stats(cp))
                    except Exception:  # noqa: BLE001 - a damaged raster must not sink the report
                        pass
            rows.append(row)
        if not rows:
            rows += _imagery_from_tags(folder, limit)
    return rows


def _imagery_from_tags(folder: Path, limit: int) -> list[dict[str, Any]]:
    import rasterio

    rows = []
    files = [folder] if folder.is_file() else sorted(folder.glob("**/*.tif"))
    for p in files[:limit]:
        if p.stem.endswith("_clear"):
            continue
        try:
            with rasterio.open(p) as src:
                t = src.tags()
        except Exception:  # noqa: BLE001
            continue
        if "START_DATE" in t:
            row = {"tile": t.get("TILE", p.stem), "start": t["START_DATE"], "end": t.get("END_DATE", ""),
                   "level": t.get("PROCESSING_LEVEL", ""), "scenes": t.get("SCENES")}
            if t.get("DEMO"):
                row["note"] = "demo mosaic: " + t["DEMO"]
            rows.append(row)
    return rows


def discover_run(
    run_dir: Path | None,
    layers: Sequence[Path] = (),
    zones: Path | None = None,
    airstrips: Path | None = None,
    card: Path | None = None,
    imagery: Sequence[Path] = (),
) -> RunInputs:
    """Gather a report's inputs from a run folder, with explicit options taking precedence."""
    if run_dir is not None and not run_dir.is_dir():
        raise MinewatchError(run_dir, "not a folder")
    manifest = _read_manifest(run_dir) if run_dir else None
    ri = RunInputs(run_dir=run_dir, manifest=manifest)
    ri.layers = list(layers) or (find_layers(run_dir) if run_dir else [])
    if not ri.layers:
        raise MinewatchError(run_dir or "--layer", "no mining layer found (expected mining*.parquet or mining*.geojson; or give --layer)")
    ri.zones = zones or (_find_named(run_dir, manifest, ("zones", "territor")) if run_dir else None)
    ri.airstrips = airstrips or (_find_named(run_dir, manifest, ("airstrip",)) if run_dir else None)
    ri.card, ri.card_path = load_card(run_dir, manifest, card)
    folders = list(imagery)
    if run_dir is not None:
        folders.append(run_dir)
        if manifest:
            folders += [p for p in _paths_in(manifest.get("inputs", {}))
                        if (p.is_dir() and (p / "tiles").is_dir()) or (p.is_file() and p.suffix.lower() in (".tif", ".tiff"))]
    ri.imagery = imagery_summary(folders)
    return ri


def mined_interval(total_ha: float) -> tuple[float, float] | None:
    """90 % interval of a total of ``mined_ha`` from the shipped calibration (None without one)."""
    from minewatch.detect.mask import calibration

    iv = calibration().get("total_interval90")
    return (total_ha * iv[0], total_ha * iv[1]) if iv else None


# --- HTML ---------------------------------------------------------------------------------------
CAVEATS = [
    ("Patches overstate mined area",
     "The detector classifies 480 m × 480 m patches (48 × 48 pixels at 10 m) on a 240 m step, and a "
     "polygon is the union of the patches it calls mining, so outlines are blocky and larger than the "
     "disturbed ground. Layers that state a mined area inside each outline (minewatch's own estimate "
     "mined_ha, or the published Amazon Mining Watch layers) are reported with that area; outline areas "
     "(footprints) are given separately."),
    ("Clouds",
     "Detections come from cloud-masked median composites. Where clouds persist, a composite has gaps "
     "(nothing can be detected) or cloud and shadow remnants (which can cause false detections). The "
     "imagery section lists the compositing dates and clear-observation counts where the run recorded them."),
    ("What it cannot see",
     "Very small workings (under about one hectare), dredges and rafts working on rivers, mining under "
     "water or canopy, and sites older than the imagery are missed or under-counted. Bare riverbanks, "
     "sandbars, aquaculture and farm ponds, quarries and landslides can be mistaken for mining."),
    ("L1C versus L2A imagery",
     "The models were trained on Sentinel-2 L1C (top-of-atmosphere) composites rendered as "
     "clip(DN/3000); applied to L2A (surface reflectance) imagery the scores shift. Check the model "
     "card's validated processing levels against the level of the imagery used."),
    ("Periods and change",
     "A detection in a period means the site looked like mining in that period's composite, not that "
     "mining began then. \"New\" area is new relative to the earlier periods in this report only. Areas "
     f"are computed in an equal-area projection ({EQUAL_AREA_CRS}); a polygon's area is shared among "
     "zones in proportion to the part of its outline inside each."),
    ("Precision",
     "Automatic detections include false positives. Quote the precision measured on a random sample "
     "reviewed by eye (minewatch review / minewatch precision) next to any total."),
]

CREDITS = [
    "Method after Earth Genome's mining-detector: Earth Genome, Amazon Mining Watch (CC BY 4.0).",
    "Published detection layers, territories and training data: Earth Genome, Amazon Mining Watch, CC BY 4.0.",
    "Clandestine airstrips: The Intercept Brasil / The New York Times / Earth Genome.",
    "Contains modified Copernicus Sentinel data. Basemap: Sentinel-2 cloudless by EOX IT Services GmbH, or Esri World Imagery.",
]

REPORT_CSS = """
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1d; background: #fafaf7; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 20px 60px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; color: #555; }
h2 { margin: 34px 0 10px; font-size: 19px; border-bottom: 2px solid #e5e1d8; padding-bottom: 4px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 10px; margin: 18px 0; }
.kpi { background: #fff; border: 1px solid #e5e1d8; border-radius: 6px; padding: 10px 12px; }
.kpi b { display: block; font-size: 22px; }
.kpi span { color: #555; font-size: 13px; }
.mapbox { border: 1px solid #ccc; border-radius: 6px; overflow: hidden; }
table.t { border-collapse: collapse; width: 100%; background: #fff; font-size: 13.5px; }
table.t th, table.t td { border-bottom: 1px solid #eee; padding: 4px 8px; text-align: left; }
table.t td.n, table.t th.n { text-align: right; font-variant-numeric: tabular-nums; }
img.chart { max-width: 100%; background: #fff; border: 1px solid #e5e1d8; border-radius: 6px; margin: 6px 0; }
.na { color: #8a4b00; font-style: italic; }
.caveat b { display: block; margin-top: 8px; }
footer { margin-top: 40px; color: #555; font-size: 13px; }
ul.findings { font-size: 16px; padding-left: 20px; } ul.findings li { margin: 4px 0; }
img.chart.small { max-width: 70%; }
.fine { font-size: 13px; color: #555; }
h3 { font-size: 16px; margin: 20px 0 6px; }
@media print {
  .mapbox { page-break-inside: avoid; } h2, h3 { page-break-after: avoid; } body { background: #fff; }
  main { padding-top: 0; } .page1 { page-break-after: always; } .page1 h2 { margin-top: 12px; }
  .page1 img.chart.small { max-height: 250px; } .appendix { page-break-before: always; } tr { page-break-inside: avoid; }
}
"""


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _fmt(v: Any, nd: int = 0) -> str:
    if v is None:
        return ""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(float(v)) else f"{float(v):,.{nd}f}"
    return str(v)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str], numeric: Sequence[bool] | None = None) -> str:
    e = html.escape
    numeric = numeric or [False] * len(header)
    h = "".join(f"<th{' class=n' if n else ''}>{e(str(x))}</th>" for x, n in zip(header, numeric, strict=True))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=n' if n else ''}>{e(str(x))}</td>" for x, n in zip(r, numeric, strict=True)) + "</tr>"
        for r in rows
    )
    return f"<table class='t'><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _metric_rows(d: dict[str, Any]) -> list[tuple[str, str]]:
    """The few validation numbers of a metrics dict that mean something on their own."""
    keys = (("n", "chips", 0), ("n_pos", "mines", 0), ("ap", "average precision", 3), ("sensitivity", "mines found at the threshold", 3),
            ("specificity", "non-mines rejected at the threshold", 3), ("sens_at_spec99", "mines found at 99 % specificity", 3))  # fmt: skip
    return [(label, _fmt(d[k], nd)) for k, label, nd in keys if isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool)]


def card_html(card: dict[str, Any] | None, card_path: Path | None) -> str:
    """The short model card: what the model is and the figures that matter, each with what it means."""
    from minewatch.models.summary import headline

    if not card:
        return f"<p class='na'>Model card {NOT_AVAILABLE} (no card.json in the run folder or its manifest; pass --card).</p>"
    e = html.escape
    spec = card.get("spec", {}) or {}
    members = card.get("members", [])
    what = (f"<p><b>{e(str(card.get('name', '')))}</b>: {e(str(card.get('architecture', '') or 'a classifier'))}"
            f"{f', {len(members)} members' if isinstance(members, list) and len(members) > 1 else ''}. It scores 480 m patches of "
            f"Sentinel-2 bands {e(', '.join(spec.get('bands', [])))} and was trained on {e(str(spec.get('level', '?')))} imagery; a patch "
            f"scoring at least {_fmt(card.get('threshold'), 3)} is called mining.</p>")  # fmt: skip
    figs = headline(card)
    if figs:
        out = what + _table([(f.label, f.value, f.meaning) for f in figs], ["Figure", "Value", "What it means"], [False, True, False])
    else:
        out = what + "<p class='na'>The card records no validation figures for this model: its accuracy is unknown.</p>"
    levels = ", ".join(map(str, (card.get("validated_levels", {}) or {}).keys())) or "none recorded"
    out += f"<p style='font-size:13px'>Validated on processing levels: {e(levels)}. Details in the appendix.</p>"
    return out


def card_appendix_html(card: dict[str, Any] | None, card_path: Path | None) -> str:
    """The rest of the card that a reader may want: per-level and per-member figures, per-source
    table, training summary. Simulation details and raw dumps are left to ``models show --json``."""
    if not card:
        return f"<p class='na'>Model card {NOT_AVAILABLE}.</p>"
    e = html.escape
    m = card.get("metrics", {}) or {}
    out = ""
    rows: list[tuple[str, str, str]] = []
    if isinstance(m.get("val"), dict):
        rows += [("validation (L1C)" if str((card.get("spec") or {}).get("level", "")).upper() == "L1C" else "validation", k, v) for k, v in _metric_rows(m["val"])]
    for lvl, d in (card.get("validated_levels", {}) or {}).items():
        if isinstance(d, dict):
            rows += [(f"{lvl}{' (simulated)' if d.get('simulated') else ''}", k, v) for k, v in _metric_rows(d)]
    for name, d in (m.get("val_members") or {}).items():
        if isinstance(d, dict):
            rows += [(f"member {name}", k, v) for k, v in _metric_rows(d)]
    plain = [(k, v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    rows += [("card", k, _fmt(v, 4)) for k, v in plain]
    if rows:
        out += "<h3>Figures</h3>" + _table(rows, ["Set", "Figure", "Value"], [False, False, True])
    ps = m.get("per_source")
    if isinstance(ps, list) and ps and all(isinstance(r, dict) for r in ps):
        body = [[str(r.get("source", "")), _fmt(r.get("n")), _fmt(r.get("n_pos")), _fmt(r.get("ap"), 3), _fmt(r.get("sensitivity"), 3),
                 _fmt(r.get("specificity"), 3)] for r in ps]  # fmt: skip
        out += ("<h3>Validation figures per labelled source</h3>"
                + _table(body, ["Source", "Chips", "Mines", "AP", "Sensitivity", "Specificity"], [False, True, True, True, True, True]))
    t = card.get("training", {}) or {}
    keep = [(k, t[k]) for k in ("chips", "chips_sha256", "val_split", "threshold_rule", "epochs", "seed", "script") if k in t]
    if isinstance(t.get("ensemble_of"), list):
        keep.append(("members", ", ".join(f"{x.get('name')} ({x.get('architecture')})" for x in t["ensemble_of"] if isinstance(x, dict))))
    if keep:
        out += "<h3>Training</h3>" + _table([(k, _fmt(v if not isinstance(v, dict) else ", ".join(f"{a}={b}" for a, b in v.items()), 4)[:160])
                                             for k, v in keep], ["Field", "Value"])  # fmt: skip
    if card.get("notes"):
        out += f"<p>{e(str(card['notes']))}</p>"
    name = card.get("name", "NAME")
    out += (f"<p style='color:#666;font-size:12px'>Every field of the card: <code>minewatch models show {e(str(name))} --json</code>"
            f"{' (card from ' + e(card_path.name if card_path else '') + ')' if card_path else ''}.</p>")
    return out


def imagery_html(rows: Sequence[dict[str, Any]]) -> str:
    """Imagery dates and cloud statistics per tile, or a note that the run did not record them."""
    if not rows:
        return (f"<p class='na'>Imagery dates and cloud coverage: {NOT_AVAILABLE} (the run folder holds no "
                "composite STAC items or tagged GeoTIFFs; published layers do not carry them).</p>")
    df = pd.DataFrame(rows)
    starts = [r for r in df.get("start", []) if r]
    ends = [r for r in df.get("end", []) if r]
    summary = f"<p>{len(df)} composite tile(s)"
    if starts and ends:
        summary += f", compositing windows from {html.escape(min(starts))} to {html.escape(max(ends))}"
    if "never_clear_pct" in df:
        summary += f"; on average {df['never_clear_pct'].mean():.1f} % of pixels had no clear observation"
    summary += ".</p>"
    cols = [c for c in ("tile", "start", "end", "level", "scenes", "max_scene_cloud", "clear_mean", "never_clear_pct", "note") if c in df]
    heads = {"tile": "Tile", "start": "Start", "end": "End", "level": "Level", "scenes": "Scenes", "note": "Note",
             "max_scene_cloud": "Max scene cloud (%)", "clear_mean": "Clear obs. (mean)", "never_clear_pct": "Never clear (%)"}  # fmt: skip
    numeric = [c in ("scenes", "max_scene_cloud", "clear_mean", "never_clear_pct") for c in cols]
    body = [[_fmt(r.get(c), 1) if isinstance(r.get(c), float) else _fmt(r.get(c)) for c in cols] for r in rows[:200]]
    more = f"<p>… and {len(rows) - 200} more tiles.</p>" if len(rows) > 200 else ""
    return summary + _table(body, [heads[c] for c in cols], numeric) + more


def zone_period_table(md: MapData, top_ids: Sequence[Any], label: str) -> str:
    """One table of the most affected zones: area in each period's layer, and the cumulative total."""
    if md.zone_stats is None or md.zones is None or not len(top_ids):
        return ""
    det = md.zone_stats.detected.groupby(level=0).sum()
    cum = md.zone_stats.cumulative.groupby(level=0).sum()
    names = md.zones.drop_duplicates("zone_id").set_index("zone_id")["zone_name"]
    last = md.periods[-1]
    rows = []
    for zid in top_ids:
        rows.append([str(names.get(zid, zid)), str(zid), *[_fmt(float(det.loc[zid, p]), 0) if p in det.columns else "" for p in md.periods],
                     _fmt(float(cum.loc[zid, last]), 0)])  # fmt: skip
    header = ["Zone", "Id", *[str(p) for p in md.periods], f"Cumulative to {last}"]
    return (f"<p style='font-size:13px'>{html.escape(label)} (ha) inside each zone in each period's layer, and the union of all periods "
            "up to the last (an area seen in two periods counts once).</p>"
            + _table(rows, header, [False, False, *[True] * len(md.periods), True]))


def alerts_per_zone_html(alerts: pd.DataFrame) -> str:
    """A table of new alerts per zone (confirmed / provisional counts and hectares), most hectares first."""
    if len(alerts) == 0:
        return "<p class='na'>No new alerts.</p>"
    a = pd.DataFrame(alerts.drop(columns="geometry", errors="ignore"))
    zone = a["zone_name"].where(a["zone_name"].notna(), a["zone_id"]) if "zone_name" in a.columns else a.get("zone_id")
    a["zone"] = zone.where(zone.notna(), "(outside every zone)") if zone is not None else "(no zones given)"
    g = a.groupby("zone")
    t = pd.DataFrame({
        "confirmed": g["status"].apply(lambda s: int((s == "confirmed").sum())),
        "provisional": g["status"].apply(lambda s: int((s == "provisional").sum())),
        "area_ha": g["area_ha"].sum(),
    }).sort_values(["area_ha", "confirmed"], ascending=False)  # fmt: skip
    since = ", ".join(sorted(a["period"].astype(str).unique()))
    rows = [[z, _fmt(r.confirmed), _fmt(r.provisional), _fmt(r.area_ha, 1)] for z, r in t.iterrows()]
    return (f"<p>{len(a):,} alerts (periods {html.escape(since)}); confirmed alerts have persisted, provisional ones are "
            "from periods whose window is still open and are replaced by the next run.</p>"
            + _table(rows, ["Zone", "Confirmed", "Provisional", "Area (ha)"], [False, True, True, True]))


def findings(md: MapData, label: str, card: dict[str, Any] | None, top: pd.DataFrame, imagery: Sequence[dict[str, Any]]) -> list[str]:
    """The report's first-page sentences: what, where, when, and how far to trust it (plain text)."""
    from minewatch.models.summary import headline

    first, last = md.periods[0], md.periods[-1]
    s_last = md.stats[-1]
    what = label.lower()
    out = [f"{s_last.area_ha:,.0f} ha of {what} detected in {last}, in {s_last.n_polygons:,} polygons."]
    if len(md.stats) > 1:
        out.append(f"{s_last.cumulative_ha:,.0f} ha in total from {first} to {last}; {s_last.new_ha:,.0f} ha of it first detected in {last}.")
    if md.zone_stats is not None and md.zones is not None:
        cum = md.zone_stats.cumulative.groupby(level=0).sum()[last]
        n_aff, n_all = int((cum > 0).sum()), int(md.zones["zone_id"].nunique())
        names = [f"{r['zone_name']} ({float(r['cumulative_ha']):,.0f} ha)" for _, r in top.head(3).iterrows()]
        out.append(f"Mining touches {n_aff:,} of {n_all:,} zones up to {last}" + (f"; most affected: {', '.join(names)}." if names else "."))
    if card:
        figs = {f.label: f for f in headline(card)}
        found, rej = figs.get("Mines found at the threshold"), figs.get("Non-mines correctly rejected")
        if found and rej:
            line = (f"The model ({card.get('name')}) found {found.value} of the mines in validation chips it had never seen, and "
                    f"rejected {rej.value} of the non-mines")
            left = figs.get("Mines found in places left out of training")
            line += f"; in regions left out of its training it found about {left.value}." if left else "."
            out.append(line)
        trained = str((card.get("spec") or {}).get("level", "")).upper()
        used = sorted({str(r.get("level")).upper() for r in imagery if r.get("level")})
        if trained and used and used != [trained]:
            l2a = figs.get("Average precision on simulated L2A") or figs.get("Average precision on L2A")
            out.append(f"The imagery is {', '.join(used)}; the model was trained on {trained}"
                       + (f" (validation AP {l2a.value} on simulated L2A)." if l2a else " and has no figures for it: scores may shift."))
    else:
        out.append("No model card came with these layers: how accurate they are is not stated here.")
    return out


def build_report(
    ri: RunInputs,
    out: str | Path,
    title: str = "minewatch report: artisanal mining detections",
    zone_id_field: str | None = None,
    zone_name_field: str | None = None,
    top_n: int = 15,
    charts_dir: str | Path | None = None,
    md: MapData | None = None,
    progress: Any = None,
    alerts: str | Path | None = None,
    **map_kw: Any,
) -> Path:
    """Write the HTML report (and the chart PNGs beside it); returns the report path.

    Layout: page 1 the findings (sentences, key figures, the table per period, one chart); then the
    map; the most affected zones (one table, a row per zone and a column per period); the short
    model card; caveats; credits; an appendix with the other charts, the imagery per tile and the
    model's detailed figures. ``progress`` (a callable taking a line) hears each step.
    """
    say = progress or (lambda s: None)
    out = Path(out)
    if md is None:
        say("report: reading layers and zones …")
        md = build_map_data(ri.layers, ri.zones, ri.airstrips, zone_id_field, zone_name_field, alerts=alerts)
    charts_dir = Path(charts_dir) if charts_dir else out.with_name(out.stem + "_charts")
    last = md.periods[-1]
    label = md.area_label
    say("report: charts …")
    png_area = charts.area_per_period(md.stats, charts_dir / "area_per_period.png", label)
    png_new = charts.new_area_per_period(md.stats, charts_dir / "new_area_per_period.png", label)
    top = pd.DataFrame(columns=["zone_name", "cumulative_ha"])
    if md.zone_stats is not None and md.zones is not None:
        t = md.zone_stats.top(top_n)
        names = md.zones.drop_duplicates("zone_id").set_index("zone_id")["zone_name"]
        top = t.assign(zone_name=names.reindex(t.index).to_numpy())
    png_top = charts.top_zones(top, charts_dir / "top_zones.png", last, label) if md.zones is not None else None

    say("report: map …")
    head, body = map_fragment(md, title, height="620px", **map_kw)
    s_last = md.stats[-1]
    fp_ratio = float(md.layer["area_ha"].sum() / max(md.layer["footprint_ha"].sum(), 1e-9))
    e = html.escape
    kpis = [
        (f"{s_last.area_ha:,.0f} ha", f"{label.lower()} detected in {last}"),
        (f"{s_last.cumulative_ha:,.0f} ha", f"cumulative {md.periods[0]}–{last}"),
        (f"{s_last.n_polygons:,}", f"polygons in {last}"),
    ]
    if md.zone_stats is not None:
        n_aff = int((md.zone_stats.cumulative.groupby(level=0).sum()[last] > 0).sum())
        kpis.append((f"{n_aff:,}", f"zones with mining up to {last}"))
    period_rows = [[s.period, _fmt(s.n_polygons), _fmt(s.area_ha), _fmt(s.new_ha), _fmt(s.cumulative_ha)] for s in md.stats]
    sources = ", ".join(sorted({str(x) for x in md.layer["source"].unique()})) if "source" in md.layer else ""
    area_note = ""
    interval = mined_interval(float(s_last.area_ha)) if label == ESTIMATE_LABEL else None
    if interval is not None:
        kpis[0] = (f"{s_last.area_ha:,.0f} ha", f"mined area (estimate) in {last}; 90 % interval {interval[0]:,.0f}–{interval[1]:,.0f} ha")
        area_note = ("<p>" + e(mined_note()) + f". Over all periods the estimate is {fp_ratio * 100:.0f} % of the footprint "
                     f"(the outline of whole 480 m patches, {md.layer['footprint_ha'].sum():,.0f} ha). The interval applies to "
                     "a total over many polygons; a single polygon's error is larger (see docs/impacts.md).</p>")
    elif label == FOOTPRINT_LABEL:
        area_note = ("<p>These areas are footprints: the outline of whole 480 m patches, which overstates mined "
                     "ground several-fold. The layers carry no mined-area estimate (rerun post-processing on "
                     "current detect output for <code>mined_ha</code>).</p>")
    if label == "Mined area":
        area_note = (f"<p>The layers state a mined area inside each outline; over all periods it is "
                     f"{fp_ratio * 100:.0f} % of the outline area. New and cumulative areas scale each "
                     "polygon's stated area by the share of its outline not detected before.</p>")
    facts = findings(md, label, ri.card, top, ri.imagery)
    today = dt.date.today().isoformat()
    parts = [
        # page 1: findings
        "<section class='page1'>",
        f"<header><h1>{e(title)}</h1><p>Generated {today} by minewatch {e(__version__)}"
        f"{' from ' + e(ri.run_dir.name or str(ri.run_dir)) if ri.run_dir else ''}. Layers: {e(sources)}.</p></header>",
        "<h2>Findings</h2><ul class='findings'>" + "".join(f"<li>{e(s)}</li>" for s in facts) + "</ul>",
        "<div class='kpis'>" + "".join(f"<div class='kpi'><b>{e(a)}</b><span>{e(b)}</span></div>" for a, b in kpis) + "</div>",
        area_note,
        _table(period_rows, ["Period", "Polygons", f"{label} (ha)", "New (ha)", "Cumulative (ha)"], [False, True, True, True, True]),
        f"<img class='chart small' alt='new area per period' src='{_png_uri(png_new)}'>",
        "<p class='fine'>Before quoting a figure, read the caveats below: detections include false positives, and areas "
        "depend on how they are measured. Model, imagery and method details are in the appendix.</p>",
        "</section>",
        "<h2>Map</h2><div class='mapbox'>" + body + "</div>",
        "<p class='fine'>Use the period slider to move through time; switch on new or cumulative mining in the layer "
        "list; click a zone for its area per period.</p>",
        "<h2>Most affected zones</h2>",
    ]
    if png_top is not None:
        parts += [zone_period_table(md, list(top.index), label) or f"<p class='na'>No zone intersects the detections.</p>"]
    else:
        parts.append(f"<p class='na'>Zones {NOT_AVAILABLE} (give --zones).</p>")
    if md.alerts is not None:
        parts += ["<h2>New alerts per zone</h2>", alerts_per_zone_html(md.alerts)]
    parts += [
        "<h2>Model</h2>", card_html(ri.card, ri.card_path),
        "<h2>Caveats: what the detector can and cannot see</h2>",
        "".join(f"<div class='caveat'><b>{e(h)}</b>{e(t)}</div>" for h, t in CAVEATS),
        "<h2>Credits and citation</h2><ul>" + "".join(f"<li>{e(c)}</li>" for c in [*CREDITS]) + "</ul>",
        f"<p class='fine'>Cite as: minewatch {e(__version__)} report, {today}; data: Earth Genome, Amazon Mining Watch (CC BY 4.0).</p>",
        "<section class='appendix'><h2>Appendix</h2>",
        f"<h3>A. {e(label)} per period</h3><img class='chart' alt='area per period' src='{_png_uri(png_area)}'>",
    ]
    if png_top is not None:
        parts.append(f"<h3>B. Most affected zones</h3><img class='chart' alt='top zones' src='{_png_uri(png_top)}'>")
    parts += [
        "<h3>C. Imagery</h3>", imagery_html(ri.imagery),
        "<h3>D. Model details</h3>", card_appendix_html(ri.card, ri.card_path),
        "</section>",
        f"<footer>minewatch {e(__version__)} · {today}</footer>",
    ]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
{head}
<style>{REPORT_CSS}</style>
</head><body><main>
{''.join(parts)}
</main></body></html>
"""
    say("report: writing …")
    return write_text_atomic(out, page)


SNAPSHOT_MAP_JS = """(function () {
  // Printing does not capture a WebGL canvas: lay a PNG snapshot of it on top before printing.
  var c = window.minewatch.map.getCanvas();
  var img = document.createElement("img");
  img.src = c.toDataURL("image/png");
  img.style.cssText = "position:absolute;left:0;top:0;width:100%;height:100%;object-fit:cover;z-index:1";
  c.parentNode.appendChild(img);
  return true;
})()"""


def write_pdf(report: str | Path, pdf: str | Path, timeout: float = 300) -> Path:
    """Print the report to PDF with headless Chromium, after the map has drawn."""
    from minewatch.atomic import atomic_path
    from minewatch.webmap.browser import Browser

    with Browser(width=1100, height=900) as b:
        b.goto(Path(report).resolve().as_uri(), timeout=timeout)
        b.wait_map_ready(timeout=timeout)
        b.evaluate(SNAPSHOT_MAP_JS)
        with atomic_path(pdf) as tmp:
            b.print_pdf(tmp)
    return Path(pdf)
