// The portal's pages: live sections (Server-Sent Events) and charts (uPlot). No inline script:
// the Content-Security-Policy allows scripts from the portal only.
"use strict";

// -- charts ---------------------------------------------------------------------------------
// <div class="chart" data-chart="ID" role="img" aria-label="..."></div> with its data in
// <script type="application/json" id="ID">{"kind": "line"|"bars", "x": [unix s...],
//   "series": [{"label": "...", "values": [...]}], "unit": "..."}</script>
const PALETTE = ["#0b5cad", "#b3261e", "#1a6b32", "#8a5300", "#6a1b9a", "#00695c"];

const charts = new Map();  // element -> uPlot instance

function drawCharts(root) {
  if (typeof uPlot === "undefined") return;
  // times on the axes in the portal's time zone (ui.timezone), as in the tables
  const tz = document.body.dataset.tz;
  const tzDate = tz ? (ts) => uPlot.tzDate(new Date(ts * 1e3), tz) : undefined;
  for (const el of root.querySelectorAll(".chart[data-chart]")) {
    const src = document.getElementById(el.dataset.chart);
    if (!src) continue;
    const d = JSON.parse(src.textContent);
    if (charts.has(el)) charts.get(el).destroy();
    el.textContent = "";
    const width = Math.max(280, el.clientWidth || el.parentElement.clientWidth || 600);
    const bars = d.kind === "bars";
    const opts = {
      width, height: 240, tzDate,
      scales: { x: { time: !d.categories } },
      axes: [
        d.categories ? { values: (u, ticks) => ticks.map((i) => d.categories[i] ?? "") } : {},
        { label: d.unit || "", size: 70 },
      ],
      series: [{}].concat(d.series.map((s, i) => ({
        label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2,
        fill: bars ? PALETTE[i % PALETTE.length] + "99" : undefined,
        paths: bars ? uPlot.paths.bars({ size: [0.6, 60] }) : undefined,
        points: { show: s.points === true || d.x.length < 60 },
      }))),
      legend: { show: d.series.length > 1 || !!d.legend },
    };
    const data = [d.x].concat(d.series.map((s) => s.values));
    charts.set(el, new uPlot(opts, data, el));
  }
  for (const el of [...charts.keys()]) {
    if (!el.isConnected) { charts.get(el).destroy(); charts.delete(el); }
  }
}

// redraw at the new width when the window is resized (a tablet turned, a window dragged)
let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => drawCharts(document), 200);
});

// -- live sections ---------------------------------------------------------------------------
// <section data-live="/ui/events/NAME" data-live-fragment="/ui/fragments/NAME?...">: each
// "update" event from the stream reloads the section's contents from the fragment URL.
// A status element [data-live-status] in it says whether the stream is connected.
const rendered = new Map();  // live section -> its HTML as rendered (browser-serialised)

function normalised(html) {
  const tpl = document.createElement("template");
  tpl.innerHTML = html;
  return tpl.innerHTML.trim();
}

function liveSections() {
  for (const sec of document.querySelectorAll("[data-live]")) {
    rendered.set(sec, normalised(sec.innerHTML));
    const status = document.querySelector(sec.dataset.liveStatus || "[data-live-status]");
    const es = new EventSource(sec.dataset.live);
    const setState = (on) => {
      if (!status) return;
      status.dataset.state = on ? "on" : "off";
      status.textContent = on ? status.dataset.on : status.dataset.off;
    };
    es.onopen = () => setState(true);
    es.onerror = () => setState(false);
    es.addEventListener("update", async (ev) => {
      setState(true);
      sec.dataset.liveVersion = ev.data;
      // the page was rendered at some version, the stream's first event says the current one:
      // fetch the section each time and swap it in only when it differs (so the first event
      // after a change made between the render and the stream's start is not lost)
      const r = await fetch(sec.dataset.liveFragment, { credentials: "same-origin" });
      if (!r.ok) return;
      const html = normalised(await r.text());
      if (html === rendered.get(sec)) return;
      rendered.set(sec, html);
      sec.innerHTML = html;
      sec.dataset.liveUpdates = String(Number(sec.dataset.liveUpdates || "0") + 1);
      drawCharts(sec);
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  liveSections();  // first: it keeps each live section's HTML before charts are drawn in it
  drawCharts(document);
});
