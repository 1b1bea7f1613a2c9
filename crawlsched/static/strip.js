// crawlsched web page: each card's strip of its last runs, and the fleet summary on top.
//
// The strips come from GET /api/scheduler/recent, asked with If-None-Match after each
// refresh of the job list: when no run changed the answer is an empty 304, so a
// page left open costs the daemon almost nothing. Values reach the page through
// textContent and attributes only (never innerHTML).
(function () {
  "use strict";

  var ns = (window.crawlsched = window.crawlsched || {});
  var OUTCOMES = ["success", "failed", "interrupted", "skipped", "missed", "running", "retrying"];
  var LABELS = {
    success: "success",
    failed: "failed",
    interrupted: "interrupted",
    skipped: "skipped",
    missed: "missed",
    running: "running",
    retrying: "failed, retry pending",
  };
  var strips = new Map(); // job id -> strip element
  var EAGER_TITLES = 40; // strips whose cells get their tooltips at once (the first cards: on screen at load)
  var pendingTitles = new Set(); // the other strips, titled in small batches once the cards are painted
  var titleTimer = null;
  var etag = null;
  var version = null; // the strips' version this page has: the daemon sends only what changed since
  var latest = {}; // job id -> strip entries (newest first)
  var inFlight = false;
  var els = {};

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // An empty strip, as a card's model holds it (the cards are copies of that model).
  ns.stripModel = function () {
    var strip = el("div", "strip");
    strip.setAttribute("data-testid", "run-strip");
    strip.setAttribute("role", "img");
    strip.setAttribute("aria-label", "No runs yet");
    return strip;
  };

  // Job ``id``'s strip: ``strip`` (a copy of the model) when given, else a new one.
  ns.buildStrip = function (id, strip) {
    strip = strip || ns.stripModel();
    strip._sig = "";
    strip._eager = strips.size < EAGER_TITLES;
    strips.set(id, strip);
    if (latest[id]) paint(strip, latest[id]);
    return strip;
  };

  ns.updateStrip = function (card, job) {
    var strip = strips.get(String(job.id));
    if (strip && latest[job.id]) paint(strip, latest[job.id]);
  };

  // A strip entry is [id, status, scheduled for, attempts, max attempts, message].
  function tooltip(run) {
    var lines = [(run[2] ? String(run[2]) : "—") + " · " + (LABELS[run[1]] || run[1])];
    if (run[3]) lines.push("attempts: " + run[3] + (run[4] ? " of " + run[4] : ""));
    if (run[5]) lines.push(String(run[5]));
    return lines.join("\n");
  }

  // Tooltips are only read on hover: the strips past the first screen get theirs a batch at a time
  // after the cards are painted, rather than 20,000 of them before the first paint.
  function setTitles() {
    titleTimer = null;
    var done = 0;
    var it = pendingTitles.values();
    for (var next = it.next(); !next.done && done < 100; next = it.next(), done++) {
      var strip = next.value;
      pendingTitles.delete(strip);
      var runs = strip._runs;
      var cells = strip.children;
      for (var i = 0; i < cells.length; i++) cells[i].title = tooltip(runs[runs.length - 1 - i]);
    }
    if (pendingTitles.size) titleTimer = setTimeout(setTitles, 0);
  }

  var cellModels = {};
  function cellModel(status) {
    var cell = cellModels[status];
    if (!cell) {
      cell = cellModels[status] = el("span", "cell cell-" + status);
      cell.setAttribute("data-status", status);
    }
    return cell;
  }

  // Oldest on the left, newest on the right (as Airflow's grid reads).
  function paint(strip, runs) {
    var sig = runs.map(function (r) {
      return r[0] + ":" + r[1] + ":" + r[3];
    }).join(",");
    if (sig === strip._sig) return;
    strip._sig = sig;
    var cells = [];
    var statuses = [];
    var counts = {};
    for (var i = runs.length - 1; i >= 0; i--) {
      var run = runs[i];
      var status = OUTCOMES.indexOf(run[1]) >= 0 ? run[1] : "unknown";
      var cell = cellModel(status).cloneNode(false);
      if (strip._eager) cell.title = tooltip(run);
      cells.push(cell);
      statuses.push(status);
      counts[status] = (counts[status] || 0) + 1;
    }
    strip.replaceChildren.apply(strip, cells);
    strip._runs = runs;
    if (!strip._eager) {
      pendingTitles.add(strip);
      if (titleTimer === null) titleTimer = setTimeout(setTitles, 50);
    }
    strip.setAttribute("data-statuses", statuses.join(" "));
    var parts = Object.keys(counts).map(function (k) {
      return counts[k] + " " + (LABELS[k] || k);
    });
    strip.setAttribute("aria-label", runs.length
      ? "Last " + runs.length + " runs, oldest first: " + parts.join(", ") +
        ". Newest: " + (LABELS[runs[0][1]] || runs[0][1]) + " at " + ns.text(runs[0][2]) + "."
      : "No runs yet");
  }

  function fetchRecent() {
    if (inFlight) return;
    inFlight = true;
    var headers = { Accept: "application/json" };
    var token = ns.getToken && ns.getToken();
    if (token) headers.Authorization = "Bearer " + token;
    if (etag) headers["If-None-Match"] = etag;
    var url = "/api/scheduler/recent" + (version ? "?changed_after=" + encodeURIComponent(version) : "");
    var early = ns.early && ns.early.recent; // boot.js asked already, as the page started
    if (early) ns.early.recent = null;
    (early || fetch(url, { headers: headers, credentials: "same-origin", cache: "no-store" }))
      .then(function (res) {
        if (res.status === 304) return null;
        if (!res.ok) throw new Error("HTTP " + res.status);
        etag = res.headers.get("ETag");
        return res.json();
      })
      .then(function (data) {
        if (!data) return;
        var changed = data.recent || {};
        if (data.full) latest = {};
        Object.keys(changed).forEach(function (id) {
          latest[id] = changed[id];
          var strip = strips.get(id);
          if (strip) paint(strip, changed[id]);
        });
        version = data.version || null;
        renderFleetRate(data.fleet || {});
      })
      .catch(function () {
        /* the job list's own refresh reports the connection */
      })
      .then(function () {
        inFlight = false;
      });
  }

  // --- fleet summary ------------------------------------------------------------------

  function renderFleetRate(fleet) {
    if (!els.rate) return;
    if (fleet.success_rate_24h === null || fleet.success_rate_24h === undefined) {
      els.rate.textContent = "—";
      els.rateNote.textContent = "no attempts in the last 24 h";
    } else {
      els.rate.textContent = Math.round(fleet.success_rate_24h * 100) + "%";
      els.rateNote.textContent = fleet.successes_24h + " of " + fleet.attempts_24h + " attempts";
    }
  }

  function renderFleet(data) {
    var jobs = Array.isArray(data.jobs) ? data.jobs : [];
    var count = { failed: 0, retrying: 0, paused: 0 };
    jobs.forEach(function (job) {
      if (count[job.status] !== undefined) count[job.status] += 1;
    });
    els.failing.textContent = String(count.failed);
    els.retrying.textContent = String(count.retrying);
    els.paused.textContent = String(count.paused);
    els.total.textContent = String(jobs.length);
    els.failingBox.dataset.alert = count.failed ? "true" : "false";
    // The scheduler's own switch (the seed's stop/start): [defaults] paused in the job file.
    if (typeof data.scheduler_paused === "boolean") {
      els.switchBox.hidden = false;
      els.switchState.textContent = data.scheduler_paused ? "stopped" : "running";
      els.switchBox.dataset.paused = data.scheduler_paused ? "true" : "false";
      els.switchButton.textContent = data.scheduler_paused ? "Start scheduler" : "Stop scheduler";
      els.switchButton.setAttribute("aria-pressed", data.scheduler_paused ? "true" : "false");
      els.switchButton._paused = data.scheduler_paused;
    }
  }

  function onSwitch() {
    var button = els.switchButton;
    if (button.getAttribute("aria-busy") === "true") return;
    var start = button._paused === true;
    if (!start && !window.confirm("Stop the scheduler? No job fires until it is started again.")) return;
    button.setAttribute("aria-busy", "true");
    ns.api("POST", "/api/scheduler/" + (start ? "start" : "stop")).then(
      function (data) {
        ns.notice("ok", String(data.message || (start ? "Scheduler started" : "Scheduler stopped")));
        ns.refresh();
      },
      function (err) {
        if (err.status !== 401) ns.notice("error", err.message);
      }
    ).then(function () {
      button.removeAttribute("aria-busy");
    });
  }

  var previousOnJobs = ns.onJobs;
  ns.onJobs = function (data) {
    if (previousOnJobs) previousOnJobs(data);
    if (data) renderFleet(data); // null: the list is unchanged (a 304)
    fetchRecent();
  };

  var previousInit = ns.init;
  ns.init = function () {
    if (previousInit) previousInit();
    els.failing = document.getElementById("fleet-failing");
    els.failingBox = document.getElementById("fleet-failing-box");
    els.retrying = document.getElementById("fleet-retrying");
    els.paused = document.getElementById("fleet-paused");
    els.total = document.getElementById("fleet-total");
    els.rate = document.getElementById("fleet-rate");
    els.rateNote = document.getElementById("fleet-rate-note");
    els.switchBox = document.getElementById("scheduler-switch");
    els.switchState = document.getElementById("scheduler-state");
    els.switchButton = document.getElementById("scheduler-button");
    els.switchButton.addEventListener("click", onSwitch);
    fetchRecent(); // beside the first job list, not after it: the cards paint their strips as they are built
  };
})();
