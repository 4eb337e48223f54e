// journeylens dashboard: draw the Plotly charts embedded as JSON; bar clicks on the funnel open the drop-off page.
(function () {
  "use strict";
  function draw() {
    document.querySelectorAll("div.chart").forEach(function (el) {
      var data = document.getElementById(el.id + "-data");
      if (!data || !window.Plotly) { return; }
      var fig = JSON.parse(data.textContent);
      var layout = Object.assign({}, fig.layout || {}, {
        autosize: true, margin: {l: 60, r: 20, t: 50, b: 60},
        paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
        font: {family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 13}
      });
      window.Plotly.newPlot(el, fig.data || [], layout, {responsive: true, displaylogo: false}).then(function () {
        el.setAttribute("data-rendered", "1");
      });
      var click = el.getAttribute("data-click");
      if (click) {
        el.on("plotly_click", function (ev) {
          var p = ev.points && ev.points[0];
          if (p && p.pointIndex > 0) { window.location = click.replace("STEP", String(p.pointIndex + 1)); }
        });
      }
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
