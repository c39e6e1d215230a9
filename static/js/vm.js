// A VM's page: a thumbnail of its screen, and its graphs.
(function () {
  "use strict";
  // The screen's thumbnail: a new picture every few seconds while the tab is visible.
  var shot = document.getElementById("thumbnail");
  if (!shot) return;
  var img = shot.querySelector("img"), caption = shot.querySelector("figcaption");
  function reload() {
    if (!document.hidden) img.src = shot.dataset.src + "?t=" + Date.now();
  }
  img.addEventListener("load", function () {
    img.hidden = false;
    caption.textContent = "The screen at " + new Date().toLocaleTimeString() + "; open the console to use it.";
  });
  img.addEventListener("error", function () {
    img.hidden = true;
    caption.textContent = "No picture of the screen now: the VM is not running.";
  });
  reload();
  setInterval(reload, Math.max(1, parseFloat(shot.dataset.interval)) * 1000);
})();

// Its graphs: the series LIMEN samples (GET /vms/<uuid>/stats), drawn with uPlot and read
// again every interval while the tab is visible. Each graph also says in words what it shows
// now and at its peak.
(function () {
  "use strict";
  var LABELS = {
    cpu_percent: "CPU", memory_mib: "in use", disk_read_bps: "read", disk_write_bps: "written",
    net_rx_bps: "received", net_tx_bps: "sent"
  };
  var HEIGHT = 140;

  // A value in words; ``digits`` (optional) fixes how many decimals it shows.
  function human(v, unit, digits) {
    if (v === null || v === undefined) return "—";
    function fixed(x, usual) { return digits === undefined ? usual : x.toFixed(digits); }
    if (unit === "B/s") {
      var units = ["B/s", "KiB/s", "MiB/s", "GiB/s"], i = 0;
      while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
      return fixed(v, i && v < 10 ? v.toFixed(1) : Math.round(v)) + " " + units[i];
    }
    if (unit === "%") return fixed(v, v < 10 ? v.toFixed(1) : Math.round(v)) + " %";
    return fixed(v, Math.round(v)) + " " + unit;
  }
  // An axis's labels: as few decimals as keep them all different ("0.5 MiB, 1 MiB, 1.5 MiB",
  // not "1 MiB, 1 MiB, 2 MiB").
  function labels(ticks, unit) {
    var out = ticks.map(function (v) { return human(v, unit); });
    for (var digits = 0; digits <= 2 && new Set(out).size < out.length; digits++) {
      out = ticks.map(function (v) { return human(v, unit, digits); });
    }
    return out;
  }
  function known(values) { return values.filter(function (v) { return v !== null; }); }
  function peak(values) { var k = known(values); return k.length ? Math.max.apply(null, k) : null; }
  function latest(values) { var k = known(values); return k.length ? k[k.length - 1] : null; }

  var section = document.getElementById("graphs");
  if (!section || !window.uPlot) return;
  var graphs = Array.prototype.map.call(section.querySelectorAll("figure.graph"), function (fig) {
    return {
      fig: fig, box: fig.querySelector(".plot"), readout: fig.querySelector(".readout"),
      fields: fig.dataset.fields.split(" "), unit: fig.dataset.unit, plot: null
    };
  });

  function options(g) {
    var css = getComputedStyle(document.documentElement);
    var ink = css.getPropertyValue("--muted").trim(), line = css.getPropertyValue("--line").trim();
    // The lines' colours are the scheme's (--plot-1, --plot-2): 3:1 or more on its surface.
    var colors = [css.getPropertyValue("--plot-1").trim(), css.getPropertyValue("--plot-2").trim()];
    var axis = { stroke: ink, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
    return {
      width: g.box.clientWidth || 300, height: HEIGHT, legend: { show: false },
      scales: { y: { range: g.unit === "%" ? [0, 100] : function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } } },
      // Time labels ("12:00:05pm") are some 70 px wide: ticks at least 90 px apart never overlap.
      axes: [Object.assign({ space: 90 }, axis),
        Object.assign({ size: 72, values: function (u, ticks) { return labels(ticks, g.unit); } }, axis)],
      series: [{}].concat(g.fields.map(function (f, i) { return { label: LABELS[f], stroke: colors[i], width: 1.5 }; }))
    };
  }

  function draw(data) {
    graphs.forEach(function (g) {
      if (!data.t.length) {
        g.readout.textContent = "no samples yet: they come while the VM runs";
      } else {
        // "now" only while the points are current; a VM that stopped shows its last value.
        var fresh = Date.now() / 1000 - data.t[data.t.length - 1] < 3 * data.interval;
        g.readout.textContent = g.fields.map(function (f) {
          return (g.fields.length > 1 ? LABELS[f] + " " : "") + (fresh ? "now " : "last ") +
            human(latest(data[f]), g.unit) + ", peak " + human(peak(data[f]), g.unit);
        }).join("; ");
      }
      var columns = [data.t].concat(g.fields.map(function (f) { return data[f]; }));
      if (g.plot) g.plot.setData(columns);
      else g.plot = new window.uPlot(options(g), columns, g.box);
    });
  }

  function refresh() {
    if (document.hidden) return;
    fetch(section.dataset.statsUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("status " + r.status); return r.json(); })
      .then(draw)
      .catch(function (e) {
        graphs.forEach(function (g) { g.readout.textContent = "LIMEN did not answer (" + e.message + "); trying again"; });
      });
  }
  refresh();
  setInterval(refresh, Math.max(1, parseFloat(section.dataset.interval)) * 1000);
  document.addEventListener("visibilitychange", refresh);
  window.addEventListener("resize", function () {
    graphs.forEach(function (g) { if (g.plot) g.plot.setSize({ width: g.box.clientWidth, height: HEIGHT }); });
  });
})();

// A VM that came to be shut off, or left it, allows other things on its page (a rename, a
// clone, a cold edit). Once its head says so and nothing is under way, the page is drawn again;
// if the person has begun to fill in a form, it says so and offers the reload instead.
(function () {
  "use strict";
  var drawn = document.querySelector("meta[name=limen-vm-state]");
  if (!drawn) return;
  var edited = false;
  document.addEventListener("input", function (e) {
    if (e.target.closest && e.target.closest("form")) edited = true;
  });
  var told = false;
  document.addEventListener("htmx:afterSettle", function () {
    var head = document.getElementById("vm-head");
    if (!head || head.dataset.busy === "yes" || told) return;
    if ((head.dataset.state === "shutoff") === (drawn.content === "shutoff")) return;
    if (!edited) {
      window.location.reload();
      return;
    }
    told = true;
    var flash = document.getElementById("flash"), p = document.createElement("p"), a = document.createElement("a");
    p.className = "ok";
    p.dataset.about = "vm-state";
    p.textContent = "The VM is " + head.dataset.state + " now, which allows other changes. ";
    a.href = window.location.pathname;
    a.textContent = "Show them (what you typed here is lost)";
    p.append(a);
    if (flash) flash.prepend(p);
  });
})();
