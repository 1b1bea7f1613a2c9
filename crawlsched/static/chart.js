// crawlsched web page: a job's runs per day (or hour) stacked by outcome, as inline SVG.
// Drawn here from GET /api/scheduler/job/<id>/stats: no library, no CDN.
(function () {
  "use strict";

  var ns = (window.crawlsched = window.crawlsched || {});
  var SVG_NS = "http://www.w3.org/2000/svg";
  var ORDER = ["success", "retrying", "failed", "interrupted", "missed", "skipped", "running"];
  var W = 640;
  var H = 200;
  var PAD = { left: 34, right: 8, top: 10, bottom: 26 };

  function svgEl(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (k) {
      node.setAttribute(k, String(attrs[k]));
    });
    return node;
  }

  function pct(rate) {
    return rate === null || rate === undefined ? "—" : Math.round(rate * 100) + "%";
  }

  // "2026-12-01T00:00:00+07:00" -> "12-01" (day) or "13:00" (hour), as the job's zone reads.
  function tick(start, bucket) {
    return bucket === "hour" ? start.slice(11, 16) : start.slice(5, 10);
  }

  ns.drawChart = function (box, stats) {
    var buckets = stats.buckets || [];
    var max = 1;
    buckets.forEach(function (b) {
      var sum = ORDER.reduce(function (acc, k) {
        return acc + (b[k] || 0);
      }, 0);
      if (sum > max) max = sum;
    });
    var svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, class: "chart-svg", role: "img", focusable: "false" });
    var totals = stats.runs || {};
    var totalRuns = ORDER.reduce(function (acc, k) {
      return acc + (totals[k] || 0);
    }, 0);
    var label = "Runs per " + stats.bucket + " since " + String(stats.since).slice(0, 16).replace("T", " ") + ": " +
      totalRuns + " runs; " + ORDER.filter(function (k) {
        return totals[k];
      }).map(function (k) {
        return totals[k] + " " + k;
      }).join(", ") + ".";
    var title = svgEl("title");
    title.textContent = label;
    svg.appendChild(title);
    svg.setAttribute("aria-label", label);

    var plotW = W - PAD.left - PAD.right;
    var plotH = H - PAD.top - PAD.bottom;
    // y axis: 0, half, max
    [0, Math.ceil(max / 2), max].forEach(function (v) {
      var y = PAD.top + plotH - (v / max) * plotH;
      svg.appendChild(svgEl("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "chart-grid" }));
      var t = svgEl("text", { x: PAD.left - 6, y: y + 4, class: "chart-axis", "text-anchor": "end" });
      t.textContent = String(v);
      svg.appendChild(t);
    });
    var n = Math.max(1, buckets.length);
    var slot = plotW / n;
    var barW = Math.max(2, Math.min(40, slot * 0.7));
    var every = Math.ceil(n / 12);
    buckets.forEach(function (b, i) {
      var x = PAD.left + i * slot + (slot - barW) / 2;
      var y = PAD.top + plotH;
      var g = svgEl("g", { class: "chart-bar" });
      var parts = [];
      ORDER.forEach(function (k) {
        var v = b[k] || 0;
        if (!v) return;
        var h = (v / max) * plotH;
        y -= h;
        g.appendChild(svgEl("rect", { x: x, y: y, width: barW, height: h, class: "seg seg-" + k }));
        parts.push(v + " " + k);
      });
      var tip = svgEl("title");
      tip.textContent = tick(b.start, stats.bucket) + ": " + (parts.length ? parts.join(", ") : "no runs");
      g.appendChild(tip);
      svg.appendChild(g);
      if (i % every === 0) {
        var t = svgEl("text", { x: x + barW / 2, y: H - 8, class: "chart-axis", "text-anchor": "middle" });
        t.textContent = tick(b.start, stats.bucket);
        svg.appendChild(t);
      }
    });

    var legend = document.createElement("ul");
    legend.className = "chart-legend";
    ORDER.forEach(function (k) {
      if (!totals[k]) return;
      var li = document.createElement("li");
      li.setAttribute("data-outcome", k);
      li.setAttribute("data-testid", "chart-total-" + k);
      var swatch = document.createElement("span");
      swatch.className = "swatch seg-" + k;
      swatch.setAttribute("aria-hidden", "true");
      li.append(swatch, document.createTextNode(k + " " + totals[k]));
      legend.appendChild(li);
    });

    var attempts = stats.attempts || {};
    var finished = (attempts.success || 0) + (attempts.failed || 0) + (attempts.interrupted || 0);
    var ended = (totals.success || 0) + (totals.failed || 0) + (totals.interrupted || 0);
    var rates = document.createElement("p");
    rates.className = "chart-rates";
    rates.setAttribute("data-testid", "chart-rates");
    rates.setAttribute("data-runs", String(totalRuns));
    rates.setAttribute("data-attempts", String(finished));
    rates.textContent = totalRuns + " runs · run success " + pct(stats.run_success_rate) +
      " (" + (totals.success || 0) + " of " + ended + " ended) · attempt success " + pct(stats.success_rate) +
      " (" + (attempts.success || 0) + " of " + finished + " attempts)";
    box.replaceChildren(svg, legend, rates);
  };
})();
