/* minewatch review page: label a random sample of detections with the keyboard (y / n / s),
 * labels kept in localStorage under the sample's key, exported as CSV for `minewatch precision`.
 * Exposes window.minewatchReview = {label(v), go(i), csv(), counts(), current()} for tests. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("rv-data").textContent);
  var items = D.items;
  var storeKey = "minewatch-review:" + D.key;
  var labels = {};
  try { labels = JSON.parse(localStorage.getItem(storeKey) || "{}") || {}; } catch (e) { labels = {}; }
  var cur = 0;
  var showOutline = true;

  function save() {
    try { localStorage.setItem(storeKey, JSON.stringify(labels)); } catch (e) { /* storage full or disabled */ }
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  // Wilson score interval (95 %), the same formula `minewatch precision` uses.
  function wilson(k, n) {
    if (n === 0) return [NaN, NaN];
    var z = 1.959963984540054, p = k / n, z2 = z * z;
    var c = (p + z2 / (2 * n)) / (1 + z2 / n);
    var h = (z / (1 + z2 / n)) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
    return [Math.max(0, c - h), Math.min(1, c + h)];
  }
  function counts() {
    var c = { yes: 0, no: 0, skip: 0, unlabelled: 0 };
    items.forEach(function (it) {
      var l = labels[it.sample] ? labels[it.sample].label : "";
      if (l === "yes" || l === "no" || l === "skip") c[l] += 1; else c.unlabelled += 1;
    });
    return c;
  }

  var strip = document.getElementById("rv-strip");
  items.forEach(function (it, i) {
    var b = document.createElement("button");
    b.className = "rv-chip";
    b.title = "#" + it.sample + " · " + it.period;
    b.dataset.i = String(i);
    if (it.img) { var im = document.createElement("img"); im.src = it.img; im.alt = ""; b.appendChild(im); }
    else b.textContent = "–";
    b.addEventListener("click", function () { go(i); });
    strip.appendChild(b);
  });

  function refreshChip(i) {
    var l = labels[items[i].sample] ? labels[items[i].sample].label : "";
    var chip = strip.children[i];
    chip.className = "rv-chip" + (l ? " rv-" + l : "") + (i === cur ? " rv-cur" : "");
  }
  function progress() {
    var c = counts();
    var n = c.yes + c.no;
    var w = wilson(c.yes, n);
    var txt = "<b>" + (items.length - c.unlabelled) + " / " + items.length + "</b> labelled · " +
      c.yes + " mine · " + c.no + " not · " + c.skip + " skipped";
    if (n > 0) {
      txt += " · precision <b>" + ((100 * c.yes) / n).toFixed(1) + " %</b> (95 % CI " + (100 * w[0]).toFixed(1) +
        "–" + (100 * w[1]).toFixed(1) + " %)";
    }
    document.getElementById("rv-progress").innerHTML = txt;
  }
  function show() {
    var it = items[cur];
    var img = document.getElementById("rv-img");
    var svg = document.getElementById("rv-svg");
    var no = document.getElementById("rv-noimg");
    if (it.img) {
      img.hidden = false; svg.style.display = showOutline ? "" : "none"; no.hidden = true;
      img.src = it.img;
      svg.setAttribute("viewBox", "0 0 " + it.w + " " + it.h);
      document.getElementById("rv-outline").setAttribute("d", it.outline);
    } else {
      img.hidden = true; svg.style.display = "none"; no.hidden = false;
    }
    var l = labels[it.sample] ? labels[it.sample].label : "";
    document.getElementById("rv-meta").innerHTML =
      "<b>#" + it.sample + "</b> of " + items.length + " · period " + esc(it.period) + " · " + it.area_ha + " ha" +
      (it.score === null ? "" : " · score " + it.score) + " · <a target='_blank' rel='noopener' href='https://www.openstreetmap.org/?mlat=" +
      it.lat + "&mlon=" + it.lon + "#map=15/" + it.lat + "/" + it.lon + "'>" + it.lat + ", " + it.lon + "</a>" +
      " · label: <b class='rv-l-" + (l || "none") + "'>" + (l || "none") + "</b>";
    for (var i = 0; i < items.length; i++) refreshChip(i);
    progress();
  }
  function go(i) {
    cur = Math.max(0, Math.min(items.length - 1, i));
    show();
    var chip = strip.children[cur];
    if (chip && chip.scrollIntoView) chip.scrollIntoView({ block: "nearest", inline: "nearest" });
    return cur;
  }
  function nextUnlabelled(from) {
    for (var k = 1; k <= items.length; k++) {
      var j = (from + k) % items.length;
      if (!labels[items[j].sample]) return j;
    }
    return Math.min(from + 1, items.length - 1);
  }
  function label(v) {
    var it = items[cur];
    labels[it.sample] = { label: v, at: new Date().toISOString() };
    save();
    return go(nextUnlabelled(cur));
  }

  function csvCell(v) {
    var s = v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function csv() {
    var cols = ["sample", "detection_id", "period", "area_ha", "score", "lon", "lat", "tile", "label", "labelled_at"];
    var lines = [cols.join(",")];
    items.forEach(function (it) {
      var l = labels[it.sample] || {};
      var row = [it.sample, it.detection_id, it.period, it.area_ha, it.score, it.lon, it.lat, it.tile || "", l.label || "", l.at || ""];
      lines.push(row.map(csvCell).join(","));
    });
    return lines.join("\n") + "\n";
  }
  function exportCsv() {
    var blob = new Blob([csv()], { type: "text/csv" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "review.csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var k = ev.key.toLowerCase();
    if (k === "y") label("yes");
    else if (k === "n") label("no");
    else if (k === "s" || k === " ") label("skip");
    else if (k === "arrowleft" || k === "backspace") go(cur - 1);
    else if (k === "arrowright") go(cur + 1);
    else if (k === "o") { showOutline = !showOutline; show(); }
    else return;
    ev.preventDefault();
  });
  document.querySelectorAll("button[data-label]").forEach(function (b) {
    b.addEventListener("click", function () { label(b.dataset.label); });
  });
  document.getElementById("rv-prev").addEventListener("click", function () { go(cur - 1); });
  document.getElementById("rv-next").addEventListener("click", function () { go(cur + 1); });
  document.getElementById("rv-toggle").addEventListener("click", function () { showOutline = !showOutline; show(); });
  document.getElementById("rv-export").addEventListener("click", exportCsv);
  document.getElementById("rv-clear").addEventListener("click", function () {
    if (confirm("Clear all labels of this sample?")) { labels = {}; save(); go(0); }
  });

  go(nextUnlabelled(-1));
  window.minewatchReview = {
    label: label, go: go, csv: csv, counts: counts,
    current: function () { return items[cur].sample; }, storeKey: storeKey
  };
})();
