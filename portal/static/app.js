// The portal's pages: live sections (Server-Sent Events) and charts (uPlot). No inline script:
// the Content-Security-Policy allows scripts from the portal only.
"use strict";

// -- charts ---------------------------------------------------------------------------------
// <div class="chart" data-chart="ID" role="img" aria-label="..."></div> with its data in
// <script type="application/json" id="ID">{"kind": "line"|"bars", "x": [unix s...],
//   "series": [{"label": "...", "values": [...]}], "unit": "..."}</script>
const PALETTE = ["#0b5cad", "#b3261e", "#1a6b32", "#8a5300", "#6a1b9a", "#00695c"];

function drawCharts(root) {
  if (typeof uPlot === "undefined") return;
  for (const el of root.querySelectorAll(".chart[data-chart]")) {
    const src = document.getElementById(el.dataset.chart);
    if (!src) continue;
    const d = JSON.parse(src.textContent);
    el.textContent = "";
    const width = Math.max(280, el.clientWidth || el.parentElement.clientWidth || 600);
    const bars = d.kind === "bars";
    const opts = {
      width, height: 240,
      scales: { x: { time: !d.categories } },
      axes: [
        d.categories ? { values: (u, ticks) => ticks.map((i) => d.categories[i] ?? "") } : {},
        { label: d.unit || "", size: 70 },
      ],
      series: [{}].concat(d.series.map((s, i) => ({
        label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2,
        fill: bars ? PALETTE[i % PALETTE.length] + "99" : undefined,
        paths: bars ? uPlot.paths.bars({ size: [0.6, 60] }) : undefined,
        points: { show: d.x.length < 60 },
      }))),
      legend: { show: d.series.length > 1 || !!d.legend },
    };
    const data = [d.x].concat(d.series.map((s) => s.values));
    new uPlot(opts, data, el);
  }
}

// -- live sections ---------------------------------------------------------------------------
// <section data-live="/ui/events/NAME" data-live-fragment="/ui/fragments/NAME?...">: each
// "update" event from the stream reloads the section's contents from the fragment URL.
// A status element [data-live-status] in it says whether the stream is connected.
function liveSections() {
  for (const sec of document.querySelectorAll("[data-live]")) {
    const status = document.querySelector(sec.dataset.liveStatus || "[data-live-status]");
    const es = new EventSource(sec.dataset.live);
    let first = true;
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
      if (first) { first = false; return; }  // the page was rendered at this version
      const r = await fetch(sec.dataset.liveFragment, { credentials: "same-origin" });
      if (!r.ok) return;
      sec.innerHTML = await r.text();
      sec.dataset.liveUpdates = String(Number(sec.dataset.liveUpdates || "0") + 1);
      drawCharts(sec);
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  drawCharts(document);
  liveSections();
});
