// crawlsched web page: one job's page at /scheduler#job/<id> — its runs with their
// attempts (filters, paging), a run's body or log as text, its chart, and its settings.
//
// Same rules as scheduler.js: values reach the page through textContent and
// attributes only, never innerHTML; a saved body is shown in a <pre> as text and
// served by the API as text/plain (nosniff), so an HTML body with a <script> is
// only ever read, never run.
(function () {
  "use strict";

  var ns = (window.crawlsched = window.crawlsched || {});
  var API = "/api/scheduler";
  var REFRESH_MS = 5000;
  var PREVIEW = 64 * 1024;
  var els = {};
  var current = null; // { id, job, before, pages }
  var timer = null;
  var FIELD_INPUT = {
    name: "e-name", start_date: "e-start", end_date: "e-end", at: "e-schedule", cron: "e-schedule",
    every: "e-schedule", hour: "e-schedule", minute: "e-schedule", schedule: "e-schedule",
    max_retries: "e-retries", retry_delay: "e-delay", timeout: "e-timeout", url: "e-url", command: "e-command",
  };

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function dash(value) {
    return value === null || value === undefined || value === "" ? "—" : String(value);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 60) return (Math.round(seconds * 10) / 10).toFixed(1) + " s";
    var s = Math.round(seconds);
    if (s < 3600) return Math.floor(s / 60) + " m " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " m";
  }

  function size(bytes) {
    if (bytes === null || bytes === undefined) return "—";
    var units = ["B", "KiB", "MiB", "GiB"];
    var v = Number(bytes);
    var i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return (i ? v.toFixed(1) : String(v)) + " " + units[i];
  }

  function answer(run) {
    if (run.http_status !== null && run.http_status !== undefined) return "HTTP " + run.http_status;
    if (run.exit_code !== null && run.exit_code !== undefined) return "exit " + run.exit_code;
    return "—";
  }

  function badge(status) {
    var b = el("span", "badge badge-" + status, status);
    b.setAttribute("data-testid", "run-status");
    return b;
  }

  // --- routing ------------------------------------------------------------------------

  function route() {
    var match = /^#job\/(.+)$/.exec(window.location.hash);
    if (!match) {
      close();
      return;
    }
    var id;
    try {
      id = decodeURIComponent(match[1]);
    } catch (e) {
      id = match[1];
    }
    open(id);
  }

  function open(id) {
    var fresh = !current || current.id !== id;
    current = { id: id, job: fresh ? null : current.job, removed: fresh ? false : current.removed, before: null, pages: 1 };
    els.main.hidden = true;
    els.view.hidden = false;
    if (fresh) {
      els.title.textContent = id;
      els.status.textContent = "";
      els.rows.replaceChildren();
      els.chart.replaceChildren();
      els.viewer.hidden = true;
      document.title = id + " · crawlsched";
      els.title.focus();
    }
    loadAll(true);
  }

  function close() {
    current = null;
    clearTimeout(timer);
    if (els.view.hidden) return;
    els.view.hidden = true;
    els.main.hidden = false;
    document.title = "crawlsched · Task Scheduler";
  }

  function path(action) {
    return API + "/job/" + encodeURIComponent(current.id) + (action ? "/" + action : "");
  }

  // --- loading ------------------------------------------------------------------------

  function loadAll(fillForm) {
    clearTimeout(timer);
    var id = current.id;
    // A removed job is asked for once (its 404); after that only its runs and chart are read.
    var job = current.removed ? Promise.resolve() : ns.api("GET", path() + "?limit=1").then(function (data) {
      if (!current || current.id !== id) return;
      showJob(data.job, fillForm);
    }, function (err) {
      // Not in the job file: a removed job whose history is kept still has its runs (loadRuns says so).
      if (!err || err.status !== 404) throw err;
    });
    var runs = current.pages === 1 ? loadRuns(false) : Promise.resolve();
    var chart = loadChart();
    Promise.all([job, runs, chart]).then(
      function () {
        ns.showText(els.error, "");
      },
      function (err) {
        if (err && err.status !== 401) ns.showText(els.error, err.message || String(err));
      }
    ).then(function () {
      if (current && current.id === id && !document.hidden) {
        timer = setTimeout(function () {
          loadAll(false);
        }, REFRESH_MS);
      }
    });
  }

  function showJob(job, fillForm) {
    current.job = job;
    els.form.closest("section").hidden = false;
    els.title.textContent = ns.text(job.name, job.id);
    els.jobId.textContent = "id " + job.id;
    els.status.className = "badge badge-" + job.status;
    els.status.textContent = job.status;
    els.summary.textContent = summary(job);
    document.title = ns.text(job.name, job.id) + " · crawlsched";
    if (fillForm) fill(job);
  }

  // A job no longer in the job file: its history stays readable, there is nothing to edit.
  function showRemoved() {
    current.job = null;
    current.removed = true;
    els.title.textContent = current.id;
    els.jobId.textContent = "id " + current.id;
    els.status.className = "badge badge-removed";
    els.status.textContent = "removed";
    els.summary.textContent = "This job is no longer in the job file; its history is kept.";
    els.form.closest("section").hidden = true;
    document.title = current.id + " (removed) · crawlsched";
  }

  function summary(job) {
    var parts = [String(job.schedule) + " (" + String(job.timezone) + ")",
                 "period " + dash(job.start_date) + " → " + (job.end_date ? job.end_date : "no end"),
                 "next run " + dash(job.next_run)];
    if (job.status === "retrying" && job.next_retry) {
      parts.push("next retry " + job.next_retry + (job.attempt ? " (attempt " + job.attempt + " of " + (job.max_retries + 1) + ")" : ""));
    }
    parts.push("retries " + job.max_retries + " × " + job.retry_delay + " s");
    return parts.join(" · ");
  }

  function runsQuery(before) {
    var q = ["limit=20"];
    if (els.statusFilter.value) q.push("status=" + encodeURIComponent(els.statusFilter.value));
    if (els.sinceFilter.value) q.push("since=" + encodeURIComponent(els.sinceFilter.value));
    if (before) q.push("before=" + before);
    return path("runs") + "?" + q.join("&");
  }

  function loadRuns(append) {
    var id = current.id;
    var before = append ? current.before : null;
    return ns.api("GET", runsQuery(before)).then(function (data) {
      if (!current || current.id !== id) return;
      if (data.removed) showRemoved();
      var bodies = data.runs.map(runGroup);
      if (append) {
        bodies.forEach(function (b) {
          els.table.appendChild(b);
        });
      } else {
        els.table.querySelectorAll("tbody").forEach(function (b) {
          b.remove();
        });
        bodies.forEach(function (b) {
          els.table.appendChild(b);
        });
      }
      current.before = data.next_before;
      els.more.hidden = !data.next_before;
      var shown = els.table.querySelectorAll("tbody").length;
      els.none.hidden = shown > 0;
      els.runsCount.textContent = shown ? shown + " shown" : "";
    });
  }

  function loadChart() {
    var id = current.id;
    var parts = els.window.value.split("|");
    return ns.api("GET", path("stats") + "?since=" + encodeURIComponent(parts[0]) + "&bucket=" + parts[1]).then(function (data) {
      if (!current || current.id !== id) return;
      if (ns.drawChart) ns.drawChart(els.chart, data);
    });
  }

  // --- the runs table -----------------------------------------------------------------

  function cell(row, value, className) {
    var td = el("td", className, value);
    row.appendChild(td);
    return td;
  }

  function runGroup(run) {
    var body = el("tbody", "run");
    body.setAttribute("data-testid", "run");
    body.setAttribute("data-run-id", String(run.id));
    body.setAttribute("data-status", run.status);
    var head = el("tr", "run-row");
    var th = el("th");
    th.scope = "rowgroup";
    th.appendChild(badge(run.status));
    head.appendChild(th);
    cell(head, dash(run.scheduled_for), "num");
    cell(head, run.trigger);
    cell(head, run.attempt_count ? run.attempt_count + " of " + run.max_attempts : "—");
    cell(head, dash(run.started_at), "num");
    cell(head, duration(run.duration), "num");
    cell(head, answer(run));
    cell(head, size(run.bytes), "num");
    cell(head, dash(run.message), "msg");
    var files = cell(head, "");
    (run.bodies || []).forEach(function (b) {
      var shown = "Body " + (b.index + 1) + " · " + size(b.size);
      var button = el("button", "btn btn-ghost btn-small", shown);
      button.type = "button";
      button.setAttribute("data-testid", "open-body");
      button.setAttribute("aria-label", shown + ": open " + b.name + " of the run scheduled " + dash(run.scheduled_for) + " as text");
      button.addEventListener("click", function () {
        view(path("runs/" + run.attempts[run.attempts.length - 1].id + "/body/" + b.index), "Body " + b.name, button);
      });
      files.appendChild(button);
    });
    body.appendChild(head);
    if (run.attempt_count) {
      run.attempts.forEach(function (a) {
        var tr = el("tr", "attempt-row");
        tr.setAttribute("data-testid", "attempt");
        var label = el("td", "attempt-label");
        label.append(el("span", "attempt-no", "attempt " + a.attempt + "/" + a.max_attempts), badge(a.status));
        tr.appendChild(label);
        cell(tr, "", "num");
        cell(tr, "");
        cell(tr, "");
        cell(tr, dash(a.started_at), "num");
        cell(tr, duration(a.duration), "num");
        cell(tr, answer(a));
        cell(tr, size(a.bytes), "num");
        var msg = cell(tr, dash(a.message), "msg");
        msg.setAttribute("data-testid", "attempt-message");
        var logs = cell(tr, "");
        if (a.log_size !== null && a.log_size !== undefined) {
          var shown = "Log · " + size(a.log_size);
          var button = el("button", "btn btn-ghost btn-small", shown);
          button.type = "button";
          button.setAttribute("data-testid", "open-log");
          button.setAttribute("aria-label", shown + ": open the log of attempt " + a.attempt + " as text");
          button.addEventListener("click", function () {
            view(path("runs/" + a.id + "/log"), "Log of attempt " + a.attempt + " (" + dash(a.started_at) + ")", button);
          });
          logs.appendChild(button);
        }
        body.appendChild(tr);
      });
    }
    return body;
  }

  // --- a body or log, as text -----------------------------------------------------------

  function authHeaders() {
    var headers = {};
    var token = ns.getToken && ns.getToken();
    if (token) headers.Authorization = "Bearer " + token;
    return headers;
  }

  function view(url, title, opener) {
    els.viewer.hidden = false;
    els.viewerTitle.textContent = title;
    els.viewerMeta.textContent = "Loading…";
    els.viewerText.textContent = "";
    els.viewerWhole.hidden = true;
    els.viewer._opener = opener;
    fetch(url + "?max=" + PREVIEW, { headers: authHeaders(), credentials: "same-origin", cache: "no-store" })
      .then(function (res) {
        if (!res.ok) {
          return res.json().then(function (d) {
            throw new Error(d && d.error ? d.error : "HTTP " + res.status);
          }, function () {
            throw new Error("HTTP " + res.status);
          });
        }
        var total = Number(res.headers.get("X-Crawlsched-Size"));
        var kind = res.headers.get("X-Crawlsched-Content-Type") || "unknown";
        var cut = res.headers.get("X-Crawlsched-Truncated") === "1";
        var textual = (res.headers.get("Content-Type") || "").indexOf("text/plain") === 0;
        return res.text().then(function (body) {
          var meta = kind + " · " + size(total) + (textual ? " · shown as text" : "");
          if (cut) meta += " · showing the first " + size(PREVIEW);
          els.viewerMeta.textContent = meta;
          els.viewerText.textContent = textual ? body : "(not text: download the whole file to open it)";
          els.viewerWhole.href = url;
          els.viewerWhole.textContent = cut || !textual ? "Open the whole file (" + size(total) + ")" : "Open as a file";
          els.viewerWhole.hidden = false;
        });
      })
      .catch(function (err) {
        els.viewerMeta.textContent = String(err.message || err);
      });
    els.viewerText.focus();
  }

  // With a token the link cannot carry it: fetch the file and open it as a text blob.
  function onWhole(event) {
    var token = ns.getToken && ns.getToken();
    if (!token) return;
    event.preventDefault();
    var href = els.viewerWhole.href;
    fetch(href, { headers: authHeaders(), cache: "no-store" }).then(function (res) {
      return res.blob();
    }).then(function (blob) {
      var typed = new Blob([blob], { type: blob.type.indexOf("text/") === 0 ? "text/plain" : "application/octet-stream" });
      window.open(URL.createObjectURL(typed), "_blank", "noopener");
    });
  }

  function closeViewer() {
    els.viewer.hidden = true;
    if (els.viewer._opener && document.body.contains(els.viewer._opener)) els.viewer._opener.focus();
  }

  // --- the settings form --------------------------------------------------------------

  function fill(job) {
    var f = els.form.elements;
    f.name.value = job.name || "";
    f.start_date.value = job.start_date || "";
    f.end_date.value = job.end_date || "";
    f.kind.value = job.kind === "cron" ? "cron" : job.kind === "every" ? "every" : "at";
    f.schedule.value = job.kind === "every" ? String(job.schedule).replace(/^every /, "") : String(job.schedule);
    f.max_retries.value = job.max_retries;
    f.retry_delay.value = job.retry_delay;
    f.timeout.value = job.timeout === null || job.timeout === undefined ? "" : job.timeout;
    f.url.value = (job.url || []).join("\n");
    els.commandField.hidden = !job.command;
    f.command.value = job.command || "";
    clearErrors();
  }

  function numberOr(raw) {
    var n = Number(raw);
    return raw !== "" && Number.isFinite(n) ? n : raw; // let the API name a bad value
  }

  function changes(job) {
    var f = els.form.elements;
    var out = {};
    var name = f.name.value.trim();
    if (name !== job.name) out.name = name;
    if (f.start_date.value !== (job.start_date || "")) out.start_date = f.start_date.value || null;
    if (f.end_date.value !== (job.end_date || "")) {
      if (f.end_date.value) out.end_date = f.end_date.value;
      else out.no_end = true;
    }
    var kind = f.kind.value;
    var value = f.schedule.value.trim();
    var was = job.kind === "every" ? String(job.schedule).replace(/^every /, "") : String(job.schedule);
    if (kind !== job.kind || value !== was) out[kind] = value;
    [["max_retries", job.max_retries], ["retry_delay", job.retry_delay], ["timeout", job.timeout]].forEach(function (p) {
      var raw = f[p[0]].value.trim();
      if (raw !== "" && String(raw) !== String(p[1])) out[p[0]] = numberOr(raw);
    });
    var urls = f.url.value.split(/\s+/).filter(Boolean);
    if (!job.command && urls.join("\n") !== (job.url || []).join("\n") && urls.length) out.url = urls.length === 1 ? urls[0] : urls;
    if (job.command && f.command.value.trim() !== job.command) out.command = f.command.value.trim();
    return out;
  }

  function clearErrors() {
    els.form.querySelectorAll("[aria-invalid]").forEach(function (input) {
      input.removeAttribute("aria-invalid");
    });
    els.form.querySelectorAll(".field-error").forEach(function (p) {
      p.hidden = true;
      p.textContent = "";
    });
    ns.showText(els.formError, "");
  }

  function fieldError(field, message) {
    var input = document.getElementById(FIELD_INPUT[field] || "");
    if (!input) {
      ns.showText(els.formError, message);
      return;
    }
    var p = document.getElementById(input.id + "-error");
    p.textContent = message;
    p.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }

  function onSave(event) {
    event.preventDefault();
    if (!current || !current.job) return;
    clearErrors();
    var body = changes(current.job);
    if (!Object.keys(body).length) {
      ns.showText(els.formError, "Nothing changed.");
      return;
    }
    els.save.disabled = true;
    ns.api("PATCH", path(), body).then(
      function (data) {
        ns.notice("ok", String(data.message || "Saved"));
        showJob(data.job, true);
        ns.showText(els.saved, String(data.message || "Saved"));
        ns.refresh();
      },
      function (err) {
        if (err.status === 401) ns.showText(els.formError, "Give the access token, then save again.");
        else if (err.field) fieldError(err.field, err.message);
        else ns.showText(els.formError, err.message);
      }
    ).then(function () {
      els.save.disabled = false;
    });
  }

  // --- the retry defaults -------------------------------------------------------------

  function loadRetry() {
    ns.api("GET", API + "/retry-config").then(function (data) {
      var d = data.defaults || {};
      var f = els.retryForm.elements;
      f.max_retries.value = d.max_retries;
      f.retry_delay.value = d.retry_delay;
      f.retry_backoff.value = d.retry_backoff;
      f.retry_max_delay.value = d.retry_max_delay === null || d.retry_max_delay === undefined ? "" : d.retry_max_delay;
      els.retryForm._defaults = d;
    }, function () {
      /* shown by the list's refresh */
    });
  }

  function onRetrySave(event) {
    event.preventDefault();
    var f = els.retryForm.elements;
    var d = els.retryForm._defaults || {};
    var body = {};
    ["max_retries", "retry_delay", "retry_backoff", "retry_max_delay"].forEach(function (k) {
      var raw = f[k].value.trim();
      if (raw !== "" && String(raw) !== String(d[k])) body[k] = numberOr(raw);
    });
    ns.showText(els.retryError, "");
    if (!Object.keys(body).length) {
      ns.showText(els.retryError, "Nothing changed.");
      return;
    }
    ns.api("POST", API + "/retry-config", body).then(
      function (data) {
        ns.notice("ok", String(data.message || "Saved"));
        els.retryForm._defaults = data.defaults;
        ns.refresh();
      },
      function (err) {
        if (err.status !== 401) ns.showText(els.retryError, err.message);
      }
    );
  }

  // --- start --------------------------------------------------------------------------

  var previousInit = ns.init;
  ns.init = function () {
    if (previousInit) previousInit();
    function $(id) {
      return document.getElementById(id);
    }
    els.main = document.querySelector("main.layout");
    els.view = $("job-view");
    els.title = $("jv-title");
    els.jobId = $("jv-id");
    els.status = $("jv-status");
    els.summary = $("jv-summary");
    els.error = $("jv-error");
    els.table = $("runs-table");
    els.rows = { replaceChildren: function () {
      els.table.querySelectorAll("tbody").forEach(function (b) {
        b.remove();
      });
    } };
    els.more = $("runs-more");
    els.none = $("runs-none");
    els.runsCount = $("runs-count");
    els.statusFilter = $("runs-status");
    els.sinceFilter = $("runs-since");
    els.window = $("chart-window");
    els.chart = $("chart");
    els.viewer = $("viewer");
    els.viewerTitle = $("viewer-title");
    els.viewerMeta = $("viewer-meta");
    els.viewerText = $("viewer-text");
    els.viewerWhole = $("viewer-whole");
    els.form = $("edit-form");
    els.formError = $("edit-error");
    els.saved = $("edit-saved");
    els.save = $("edit-save");
    els.commandField = $("e-command-field");
    els.retryForm = $("retry-form");
    els.retryError = $("retry-error");

    els.more.addEventListener("click", function () {
      current.pages += 1;
      loadRuns(true).catch(function (err) {
        ns.showText(els.error, err.message);
      });
    });
    [els.statusFilter, els.sinceFilter].forEach(function (select) {
      select.addEventListener("change", function () {
        current.pages = 1;
        loadRuns(false).catch(function (err) {
          ns.showText(els.error, err.message);
        });
      });
    });
    els.window.addEventListener("change", function () {
      loadChart().catch(function (err) {
        ns.showText(els.error, err.message);
      });
    });
    $("viewer-close").addEventListener("click", closeViewer);
    els.viewer.addEventListener("keydown", function (event) {
      if (event.key === "Escape") closeViewer();
    });
    els.viewerWhole.addEventListener("click", onWhole);
    els.form.addEventListener("submit", onSave);
    $("edit-reset").addEventListener("click", function () {
      if (current && current.job) fill(current.job);
    });
    els.retryForm.addEventListener("submit", onRetrySave);
    window.addEventListener("hashchange", route);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && current) loadAll(false);
    });
    loadRetry();
    route();
  };
})();
