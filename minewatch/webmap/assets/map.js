/* minewatch web map: MapLibre GL JS layers for mining detections per period, new and cumulative
 * mining, zones with their mined area, airstrips. Reads its data from the JSON block
 * <script id="mw-data" type="application/json"> written by minewatch.webmap.map; inlined into the
 * HTML so the page works from disk with no server.
 * Exposes window.minewatch = {map, periods, setPeriod(i), period(), ready} for tests and embedding. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("mw-data").textContent);
  var periods = D.periods;
  var current = periods.length - 1;
  var fmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  var fmt0 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  var basemapFailures = 0;

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  // Colour of cumulative mining by the period it first appeared in (oldest pale, newest dark).
  function rampColor(i) {
    var stops = D.ramp;
    if (periods.length <= 1) return stops[stops.length - 1];
    var t = (i / (periods.length - 1)) * (stops.length - 1);
    return stops[Math.round(t)];
  }
  var rampExpr = ["match", ["get", "p"]];
  periods.forEach(function (_, i) { rampExpr.push(i, rampColor(i)); });
  rampExpr.push("#888888");

  // Points arrive as compact columns (x, y, p, r, a, n); MapLibre wants GeoJSON features.
  function expandPoints(c) {
    var feats = new Array(c.x.length);
    for (var i = 0; i < c.x.length; i++) {
      var props = { p: c.p[i], r: c.r[i], a: c.a[i] };
      if (c.n[i]) props.n = 1;
      feats[i] = { type: "Feature", properties: props, geometry: { type: "Point", coordinates: [c.x[i], c.y[i]] } };
    }
    return { type: "FeatureCollection", features: feats };
  }

  var basemaps = {
    eox: {
      tiles: ["https://tiles.maps.eox.at/wmts/1.0.0/s2cloudless-2020_3857/default/g/{z}/{y}/{x}.jpg"],
      maxzoom: 15,
      attribution: '<a href="https://s2maps.eu">Sentinel-2 cloudless</a> by EOX IT Services GmbH (contains modified Copernicus Sentinel data 2020)'
    },
    esri: {
      tiles: ["https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}"],
      maxzoom: 19,
      attribution: "Imagery: Esri, Maxar, Earthstar Geographics, and the GIS User Community"
    }
  };

  var sources = {
    detections: { type: "geojson", data: D.detections, attribution: D.attribution },
    newmining: { type: "geojson", data: D.newmining },
    detpoints: { type: "geojson", data: expandPoints(D.detpoints) },
    newpoints: { type: "geojson", data: expandPoints(D.newpoints) },
    zones: { type: "geojson", data: D.zones },
    airstrips: { type: "geojson", data: D.airstrips },
    alerts: { type: "geojson", data: D.alerts || { type: "FeatureCollection", features: [] } }
  };
  // At continental zooms most mines are smaller than a pixel and vanish from the polygon layers,
  // so each polygon also has a point (radius grows with the square root of its area) that fades out
  // as the polygons become visible.
  var radius = ["interpolate", ["linear"], ["get", "r"], 0, 1.5, 10, 3.5, 40, 9];
  var fade = ["interpolate", ["linear"], ["zoom"], 6, 0.85, 9, 0];
  function pts(id, source, filter, color, visible) {
    return { id: id, type: "circle", source: source, filter: filter, maxzoom: 9,
      layout: { visibility: visible ? "visible" : "none" },
      paint: { "circle-radius": radius, "circle-color": color, "circle-opacity": fade,
        "circle-stroke-color": "#3a1a00", "circle-stroke-width": 0.5, "circle-stroke-opacity": fade } };
  }
  // New and cumulative mining: polygons that are entirely new in their period are drawn from the
  // detections source (flag n=1) and only the partly-new pieces are shipped separately, so no
  // geometry is stored twice. Filters by kind: eq (= period), le (<= period), *Whole (n=1 only).
  var periodLayers = {
    "detections-fill": "eq", "detections-line": "eq", "detections-pts": "eq",
    "new-fill": "eqWhole", "new-pts": "eqWhole", "new-part-fill": "eq", "new-part-pts": "eq",
    "cumulative-fill": "leWhole", "cumulative-pts": "leWhole", "cumulative-part-fill": "le", "cumulative-part-pts": "le"
  };
  function filt(kind, i) {
    var f = kind.indexOf("le") === 0 ? ["<=", ["get", "p"], i] : ["==", ["get", "p"], i];
    return kind.indexOf("Whole") > 0 ? ["all", f, ["==", ["get", "n"], 1]] : f;
  }
  var layers = [{ id: "background", type: "background", paint: { "background-color": "#d9dcd3" } }];
  Object.keys(basemaps).forEach(function (k) {
    var b = basemaps[k];
    sources["basemap-" + k] = { type: "raster", tiles: b.tiles, tileSize: 256, maxzoom: b.maxzoom, attribution: b.attribution };
    layers.push({ id: "basemap-" + k, type: "raster", source: "basemap-" + k,
      layout: { visibility: D.basemap === k ? "visible" : "none" } });
  });
  layers.push(
    { id: "zones-fill", type: "fill", source: "zones", paint: { "fill-color": "#5ab4e6", "fill-opacity": 0.06 } },
    { id: "zones-line", type: "line", source: "zones", paint: { "line-color": "#5ab4e6", "line-width": 1.2 } },
    pts("cumulative-pts", "detpoints", filt("leWhole", current), rampExpr, false),
    pts("cumulative-part-pts", "newpoints", filt("le", current), rampExpr, false),
    pts("new-pts", "detpoints", filt("eqWhole", current), D.colors.newmining, false),
    pts("new-part-pts", "newpoints", filt("eq", current), D.colors.newmining, false),
    pts("detections-pts", "detpoints", filt("eq", current), D.colors.detections, true),
    { id: "cumulative-fill", type: "fill", source: "detections", filter: filt("leWhole", current),
      layout: { visibility: "none" }, paint: { "fill-color": rampExpr, "fill-opacity": 0.75 } },
    { id: "cumulative-part-fill", type: "fill", source: "newmining", filter: filt("le", current),
      layout: { visibility: "none" }, paint: { "fill-color": rampExpr, "fill-opacity": 0.75 } },
    { id: "new-fill", type: "fill", source: "detections", filter: filt("eqWhole", current),
      layout: { visibility: "none" }, paint: { "fill-color": D.colors.newmining, "fill-opacity": 0.8 } },
    { id: "new-part-fill", type: "fill", source: "newmining", filter: filt("eq", current),
      layout: { visibility: "none" }, paint: { "fill-color": D.colors.newmining, "fill-opacity": 0.8 } },
    { id: "detections-fill", type: "fill", source: "detections", filter: filt("eq", current),
      paint: { "fill-color": D.colors.detections, "fill-opacity": 0.6 } },
    { id: "detections-line", type: "line", source: "detections", filter: filt("eq", current),
      paint: { "line-color": D.colors.detectionsLine, "line-width": 1 } },
    { id: "alerts-fill", type: "fill", source: "alerts",
      paint: { "fill-color": ["match", ["get", "st"], "confirmed", D.alertColors.confirmed, D.alertColors.provisional], "fill-opacity": 0.25 } },
    { id: "alerts-line", type: "line", source: "alerts",
      paint: { "line-color": ["match", ["get", "st"], "confirmed", D.alertColors.confirmed, D.alertColors.provisional], "line-width": 2 } },
    { id: "airstrips", type: "circle", source: "airstrips",
      paint: { "circle-radius": ["interpolate", ["linear"], ["zoom"], 3, 2, 10, 5], "circle-color": D.colors.airstrips,
        "circle-stroke-color": "#111111", "circle-stroke-width": 1 } }
  );

  var map = new maplibregl.Map({
    container: "map",
    style: { version: 8, sources: sources, layers: layers },
    bounds: D.bounds,
    fitBoundsOptions: { padding: 30 },
    attributionControl: false,
    canvasContextAttributes: { preserveDrawingBuffer: true },  // lets the PDF export snapshot the canvas
    maxZoom: 18
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric", maxWidth: 140 }), "bottom-left");
  map.addControl(new maplibregl.AttributionControl({ compact: false, customAttribution: D.credits }), "bottom-right");

  // Tile failures (offline, blocked host) must not break the map: the plain background stays and a
  // note says why. Any other error is logged so that it is noticed.
  map.on("error", function (e) {
    if (e && e.sourceId && e.sourceId.indexOf("basemap-") === 0) {
      basemapFailures += 1;
      var n = document.getElementById("mw-offline");
      if (n) n.hidden = false;
      return;
    }
    console.error("map error:", e && e.error ? e.error.message || e.error : e);
  });

  // --- period control -------------------------------------------------------------------------
  var slider = document.getElementById("mw-period");
  var label = document.getElementById("mw-period-label");
  slider.max = String(periods.length - 1);
  slider.value = String(current);

  function statsHtml(i) {
    var s = D.stats[i];
    var h = "<table class='mw-stats'>";
    h += "<tr><th>" + esc(D.areaLabel) + "</th><td>" + fmt0.format(s.area_ha) + " ha</td></tr>";
    h += "<tr><th>Polygons</th><td>" + fmt0.format(s.n) + "</td></tr>";
    h += "<tr><th>New (not seen before)</th><td>" + fmt0.format(s.new_ha) + " ha</td></tr>";
    h += "<tr><th>Cumulative to " + esc(periods[i]) + "</th><td>" + fmt0.format(s.cum_ha) + " ha</td></tr>";
    return h + "</table>";
  }

  // The style is built in code, but MapLibre still refuses filter/layout changes until it has
  // loaded: until then changes only update the controls and are applied on "load".
  var styleReady = false;
  function applyFilters() {
    var i = current;
    Object.keys(periodLayers).forEach(function (id) { map.setFilter(id, filt(periodLayers[id], i)); });
  }
  function setPeriod(i) {
    i = Math.max(0, Math.min(periods.length - 1, Number(i)));
    current = i;
    slider.value = String(i);
    label.textContent = periods[i];
    if (styleReady) applyFilters();
    document.getElementById("mw-stats").innerHTML = statsHtml(i);
    return periods[i];
  }
  slider.addEventListener("input", function () { setPeriod(slider.value); });
  document.getElementById("mw-prev").addEventListener("click", function () { setPeriod(current - 1); });
  document.getElementById("mw-next").addEventListener("click", function () { setPeriod(current + 1); });
  var playTimer = null;
  document.getElementById("mw-play").addEventListener("click", function (ev) {
    if (playTimer) { clearInterval(playTimer); playTimer = null; ev.target.textContent = "▶"; return; }
    ev.target.textContent = "❚❚";
    setPeriod(0);
    playTimer = setInterval(function () {
      if (current >= periods.length - 1) { clearInterval(playTimer); playTimer = null; ev.target.textContent = "▶"; return; }
      setPeriod(current + 1);
    }, 1200);
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.target && (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT")) return;
    if (ev.key === "ArrowLeft") setPeriod(current - 1);
    if (ev.key === "ArrowRight") setPeriod(current + 1);
  });

  // --- layer toggles and basemap choice -------------------------------------------------------
  var groups = {
    detections: ["detections-pts", "detections-fill", "detections-line"],
    newmining: ["new-pts", "new-part-pts", "new-fill", "new-part-fill"],
    cumulative: ["cumulative-pts", "cumulative-part-pts", "cumulative-fill", "cumulative-part-fill"],
    zones: ["zones-fill", "zones-line"], airstrips: ["airstrips"], alerts: ["alerts-fill", "alerts-line"]
  };
  function setLayerVisible(name, on) {
    if (!styleReady) return;
    groups[name].forEach(function (id) { map.setLayoutProperty(id, "visibility", on ? "visible" : "none"); });
    var box = document.querySelector("input[data-layer='" + name + "']");
    if (box) box.checked = !!on;
  }
  document.querySelectorAll("input[data-layer]").forEach(function (box) {
    box.addEventListener("change", function () { setLayerVisible(box.dataset.layer, box.checked); });
  });
  var baseSelect = document.getElementById("mw-basemap");
  baseSelect.value = D.basemap;
  baseSelect.addEventListener("change", function () {
    if (!styleReady) return;
    Object.keys(basemaps).forEach(function (k) {
      map.setLayoutProperty("basemap-" + k, "visibility", baseSelect.value === k ? "visible" : "none");
    });
  });

  // --- popups -----------------------------------------------------------------------------------
  function zoneHtml(props) {
    var z = D.zoneStats[props.zi];
    var h = "<div class='mw-pop-title'>" + esc(z.name) + "</div><div class='mw-pop-sub'>" + esc(z.id) +
      (z.country ? " · " + esc(z.country) : "") + "</div>";
    h += "<table class='mw-pop-table'><tr><th>Period</th><th>Detected</th><th>Cumulative</th></tr>";
    periods.forEach(function (p, i) {
      h += "<tr" + (i === current ? " class='mw-cur'" : "") + "><td>" + esc(p) + "</td><td>" + fmt.format(z.d[i]) +
        " ha</td><td>" + fmt.format(z.c[i]) + " ha</td></tr>";
    });
    return h + "</table>";
  }
  function detectionHtml(props, kind) {
    var h = "<div class='mw-pop-title'>" + esc(kind) + " · " + esc(periods[props.p]) + "</div><table class='mw-pop-table'>";
    h += "<tr><th>" + esc(D.areaLabel) + "</th><td>" + fmt.format(props.a) + " ha</td></tr>";
    if (props.f !== undefined) h += "<tr><th>Footprint (outline)</th><td>" + fmt.format(props.f) + " ha</td></tr>";
    h += "<tr><th>Score</th><td>" + (props.s === undefined || props.s === null ? "n/a" : Number(props.s).toFixed(3)) + "</td></tr>";
    h += "<tr><th>Period</th><td>" + esc(periods[props.p]) + "</td></tr>";
    return h + "</table>";
  }
  function airstripHtml(props) {
    var h = "<div class='mw-pop-title'>Airstrip</div><table class='mw-pop-table'>";
    Object.keys(props).forEach(function (k) { h += "<tr><th>" + esc(k) + "</th><td>" + esc(props[k]) + "</td></tr>"; });
    return h + "</table>";
  }
  function alertHtml(props) {
    var h = "<div class='mw-pop-title'>Alert · " + esc(props.st) + "</div><table class='mw-pop-table'>";
    h += "<tr><th>Alert id</th><td>" + esc(props.id) + "</td></tr><tr><th>Detected</th><td>" + esc(props.d0) + " – " + esc(props.d1) +
      " (" + esc(props.p) + ")</td></tr><tr><th>Area</th><td>" + fmt.format(props.a) + " ha</td></tr>";
    if (props.z !== undefined) h += "<tr><th>Zone</th><td>" + esc(props.z) + "</td></tr>";
    return h + "</table>";
  }
  map.on("click", function (e) {
    var order = ["alerts-fill", "airstrips", "detections-fill", "detections-pts", "new-fill", "new-part-fill", "new-pts",
      "new-part-pts", "cumulative-fill", "cumulative-part-fill", "cumulative-pts", "cumulative-part-pts", "zones-fill"];
    var live = order.filter(function (id) { return map.getLayoutProperty(id, "visibility") !== "none"; });
    var pad = 4;
    var box = [[e.point.x - pad, e.point.y - pad], [e.point.x + pad, e.point.y + pad]];
    var feats = map.queryRenderedFeatures(box, { layers: live });
    if (!feats.length) return;
    var parts = [];
    var seen = {};
    feats.forEach(function (f) {
      var id = f.layer.id;
      var key = id.replace("-pts", "-fill").replace("-part", "");
      if (seen[key]) return;
      seen[key] = true;
      if (id === "alerts-fill") parts.push(alertHtml(f.properties));
      else if (id === "airstrips") parts.push(airstripHtml(f.properties));
      else if (key === "detections-fill") parts.push(detectionHtml(f.properties, "Detection"));
      else if (key === "new-fill") parts.push(detectionHtml(f.properties, "New mining"));
      else if (key === "cumulative-fill") parts.push(detectionHtml(f.properties, "First detected"));
      else if (id === "zones-fill") parts.push(zoneHtml(f.properties));
    });
    new maplibregl.Popup({ maxWidth: "340px" }).setLngLat(e.lngLat).setHTML(parts.join("<hr>")).addTo(map);
  });
  Object.keys(periodLayers).concat(["zones-fill", "airstrips", "alerts-fill"]).forEach(function (id) {
    map.on("mouseenter", id, function () { map.getCanvas().style.cursor = "pointer"; });
    map.on("mouseleave", id, function () { map.getCanvas().style.cursor = ""; });
  });

  // --- legend -----------------------------------------------------------------------------------
  var ramp = document.getElementById("mw-ramp");
  if (ramp) {
    ramp.style.background = "linear-gradient(to right, " + D.ramp.join(", ") + ")";
    document.getElementById("mw-ramp-lo").textContent = periods[0];
    document.getElementById("mw-ramp-hi").textContent = periods[periods.length - 1];
  }

  setPeriod(current);
  // Ready = style loaded and every visible source tiled and drawn. "idle" says so, but is only
  // emitted after a render; polling map.loaded() as well makes readiness robust to event timing.
  var ready = new Promise(function (resolve) {
    var done = false;
    function finish() {
      if (done) return;
      done = true;
      clearInterval(poll);
      window.minewatch.loadedMs = performance.now();
      document.body.dataset.ready = "1";
      resolve(true);
    }
    // Seen in headless Chromium with large inline GeoJSON: the style and every tile finish loading
    // but no frame is scheduled afterwards, so "load" never fires and nothing is drawn until the
    // user touches the map. Requesting a repaint once everything is loaded unblocks it.
    var poll = setInterval(function () {
      if (!map.loaded()) return;
      if (!styleReady) map.triggerRepaint();
      else if (!map.isMoving()) finish();
    }, 100);
    map.once("load", function () {
      styleReady = true;
      applyFilters();
      map.once("idle", finish);
    });
  });
  window.minewatch = {
    map: map, periods: periods, setPeriod: setPeriod, ready: ready, setLayerVisible: setLayerVisible,
    period: function () { return periods[current]; },
    basemapFailures: function () { return basemapFailures; },
    // Resolves once the map has drawn every change made so far (two frames, then "idle" if busy).
    settled: function () {
      return new Promise(function (resolve) {
        requestAnimationFrame(function () {
          requestAnimationFrame(function () {
            if (map.loaded() && !map.isMoving()) resolve(true);
            else map.once("idle", function () { resolve(true); });
          });
        });
      });
    }
  };
})();
