// crawlsched web page: lists jobs, adds, pauses/resumes, runs and deletes them
// through the JSON API (SPEC §8).
//
// Security rules this file keeps:
// - every value from the API reaches the page through textContent or an
//   attribute set with setAttribute/dataset: never innerHTML, so a job named
//   `<img src=x onerror=alert(1)>` shows as text;
// - no inline scripts or handlers anywhere (the page is served with
//   Content-Security-Policy: default-src 'self'); listeners are attached here.
(function () {
  "use strict";

  var REFRESH_MS = 2000;
  var TOKEN_KEY = "crawlsched.token";
  var API = "/api/scheduler";
  var STATUSES = ["active", "success", "failed", "retrying", "running", "paused", "finished"];
  var SVG_NS = "http://www.w3.org/2000/svg";

  var els = {};
  // Shared with strip.js, job.js and chart.js (loaded before this file).
  var ns = (window.crawlsched = window.crawlsched || {});
  var cards = new Map(); // job id -> card element, kept between refreshes
  var timer = null;
  var needToken = false; // waiting for the user to give a token
  var memoryToken = null; // fallback when sessionStorage is unavailable
  var lastRequest = 0; // refreshes can overlap; only the newest one renders

  // --- API -------------------------------------------------------------------

  function ApiError(message, status) {
    this.message = message;
    this.status = status;
  }

  function getToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY);
    } catch (e) {
      return null;
    }
  }

  function setToken(token) {
    try {
      window.sessionStorage.setItem(TOKEN_KEY, token);
    } catch (e) {
      /* storage disabled: the token lives until the page reloads */
    }
    memoryToken = token;
  }

  // Calls the API; resolves with the parsed body when success is true, else
  // rejects with an ApiError carrying the API's own error text.
  function api(method, path, body) {
    var headers = { Accept: "application/json" };
    var token = getToken() || memoryToken;
    if (token) headers.Authorization = "Bearer " + token;
    var init = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(
      function (res) {
        return parse(res, token);
      },
      function () {
        throw new ApiError("Cannot reach the scheduler.", 0);
      }
    );
  }

  // The API's answer: its body when success is true, else an ApiError with its own text.
  function parse(res, token) {
    if (res.status === 401) {
      askForToken(Boolean(token));
      throw new ApiError("An access token is needed.", 401);
    }
    return res.json().then(
      function (data) {
        if (!res.ok || !data || data.success === false) {
          var text = data && data.error ? String(data.error) : "HTTP " + res.status;
          var failure = new ApiError(text, res.status);
          failure.field = data && typeof data.field === "string" ? data.field : null; // the refused field (PATCH)
          throw failure;
        }
        return data;
      },
      function () {
        throw new ApiError("HTTP " + res.status + ": the answer was not JSON", res.status);
      }
    );
  }

  function jobPath(id, action) {
    return API + "/job/" + encodeURIComponent(id) + (action ? "/" + action : "");
  }

  // --- token -------------------------------------------------------------------

  function askForToken(rejected) {
    if (needToken) return;
    needToken = true;
    stopRefresh();
    els.tokenForm.hidden = false;
    showText(els.tokenError, rejected ? "That token was not accepted." : "");
    setLive("auth", "Token needed");
    els.tokenInput.focus();
  }

  function onTokenSubmit(event) {
    event.preventDefault();
    var token = els.tokenInput.value.trim();
    if (!token) return;
    setToken(token);
    els.tokenInput.value = "";
    els.tokenForm.hidden = true;
    needToken = false;
    refresh();
  }

  // --- refresh loop ----------------------------------------------------------

  function refresh() {
    clearTimeout(timer);
    timer = null;
    if (needToken) return;
    var request = ++lastRequest;
    jobsRequest().then(
      function (data) {
        if (request !== lastRequest) return; // a newer refresh is under way
        if (data === null) {
          // 304: nothing the list shows has changed (the daemon keeps the answer), nothing to redraw.
          setLive("ok", "Updated " + clock(new Date()));
          if (ns.onJobs) ns.onJobs(null);
          schedule();
          return;
        }
        render(Array.isArray(data.jobs) ? data.jobs : []);
        renderFacts(data);
        setLive("ok", "Updated " + clock(new Date()));
        if (ns.onJobs) ns.onJobs(data);
        schedule();
      },
      function (err) {
        if (request !== lastRequest) return;
        if (err.status === 401) return; // the token form restarts the loop
        setLive("error", err.message + " Retrying…");
        schedule();
      }
    );
  }

  // 24-hour HH:MM:SS, whatever the browser's locale (the API's times are 24-hour too).
  function clock(date) {
    function two(n) {
      return (n < 10 ? "0" : "") + n;
    }
    return two(date.getHours()) + ":" + two(date.getMinutes()) + ":" + two(date.getSeconds());
  }

  // GET /jobs with the ETag of the last answer: resolves with the data, or null for a 304.
  var jobsTag = null;
  function jobsRequest() {
    var headers = { Accept: "application/json" };
    var token = getToken() || memoryToken;
    if (token) headers.Authorization = "Bearer " + token;
    if (jobsTag) headers["If-None-Match"] = jobsTag;
    var early = ns.early && ns.early.jobs; // boot.js asked already, as the page started
    if (early) {
      ns.early.jobs = null;
      token = ns.early.token;
    }
    return (early || fetch(API + "/jobs", { headers: headers, credentials: "same-origin", cache: "no-store" })).then(
      function (res) {
        if (res.status === 304) return null;
        if (res.ok) jobsTag = res.headers.get("ETag");
        return parse(res, token);
      },
      function () {
        throw new ApiError("Cannot reach the scheduler.", 0);
      }
    );
  }

  function schedule() {
    clearTimeout(timer);
    // A hidden tab does not poll; visibilitychange refreshes on return.
    if (!document.hidden && !needToken) timer = setTimeout(refresh, REFRESH_MS);
  }

  function stopRefresh() {
    clearTimeout(timer);
    timer = null;
  }

  function setLive(state, text) {
    els.live.dataset.state = state;
    els.liveText.textContent = text;
  }

  // --- rendering -------------------------------------------------------------
  // Cards are kept and updated in place (keyed by job id) rather than rebuilt,
  // so focus, hover and a pending click survive the 2 s refresh.

  function render(jobs) {
    var seen = new Set();
    var slot = els.jobs.firstChild;
    // The first list is built off the page and put in at once (one style and layout pass).
    var batch = cards.size === 0 ? document.createDocumentFragment() : null;
    jobs.forEach(function (job) {
      var id = String(job.id);
      seen.add(id);
      var card = cards.get(id);
      if (!card) {
        card = buildCard(id);
        cards.set(id, card);
      }
      updateCard(card, job);
      if (batch) {
        batch.appendChild(card);
        return;
      }
      // Keep the API's order, moving a card only when it is out of place:
      // moving a node takes keyboard focus away from the button in it.
      if (card === slot) {
        slot = slot.nextSibling;
      } else {
        els.jobs.insertBefore(card, slot);
      }
    });
    if (batch) els.jobs.insertBefore(batch, slot);
    cards.forEach(function (card, id) {
      if (!seen.has(id)) {
        card.remove();
        cards.delete(id);
      }
    });
    els.empty.hidden = jobs.length > 0;
    els.count.textContent = jobs.length ? String(jobs.length) : "";
  }

  // What the jobs payload says beside the jobs: a broken job file (the jobs shown are the
  // daemon's last good ones), a stopped scheduler, and whether a default crawl exists, so
  // the URL hint tells the truth.
  function renderFacts(data) {
    if (data.config_error) {
      showText(els.configBanner, "The job file is broken and not applied: " + String(data.config_error) +
        ". Shown are the jobs the daemon is running, from its last good file; changes are refused until the file is fixed.");
    } else {
      showText(els.configBanner, "");
    }
    els.pausedBanner.hidden = data.scheduler_paused !== true;
    if (data.default_crawl === true) {
      els.urlHelp.textContent = "Empty: the job file's default crawl ([defaults] url or command).";
      els.urlInput.required = false;
    } else if (data.default_crawl === false) {
      els.urlHelp.textContent = "Required: the job file names no default crawl (set one with `crawlsched defaults --url URL`).";
      els.urlInput.required = true;
    }
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A card is a copy of one built once (cloneNode is several times cheaper than building
  // each of its ~60 nodes again); its parts are marked data-part in the model, and found in
  // the copy with one query (in document order, the order recorded for the model).
  var model = null;
  var PART_NAMES = ["name", "idLine", "badge", "scheduleText", "tz", "pause", "run", "del", "strip", "open"];
  var FIELD_NAMES = ["schedule", "retry", "period", "next_run", "next_retry", "last_run", "last_message"];

  function buildCard(id) {
    if (!model) {
      var built = buildModel();
      var named = [];
      PART_NAMES.forEach(function (name) {
        named.push([built.parts[name], name, false]);
      });
      FIELD_NAMES.forEach(function (name) {
        named.push([built.parts.fields[name], name, true]);
      });
      named.forEach(function (entry) {
        entry[0].setAttribute("data-part", "");
      });
      var order = Array.prototype.slice.call(built.card.querySelectorAll("[data-part]"));
      model = { card: built.card, order: order.map(function (node) {
        var entry = named.find(function (e) {
          return e[0] === node;
        });
        return [entry[1], entry[2]];
      }) };
    }
    var card = model.card.cloneNode(true);
    card.setAttribute("data-job-id", id);
    var parts = { fields: {} };
    var found = card.querySelectorAll("[data-part]");
    for (var i = 0; i < found.length; i++) {
      var where = model.order[i];
      (where[1] ? parts.fields : parts)[where[0]] = found[i];
    }
    parts.run._icon = "play";
    parts.run._label = "Run now";
    parts.pause._icon = "pause";
    parts.pause._label = "Pause";
    parts.open.href = "#job/" + encodeURIComponent(id);
    if (ns.buildStrip) ns.buildStrip(id, parts.strip);
    card._parts = parts;
    card._job = null;
    return card;
  }

  // The card's buttons: one listener on the list for all of them.
  function onCardClick(event) {
    var button = event.target.closest ? event.target.closest("button") : null;
    var card = button ? button.closest(".card") : null;
    if (!card || !card._job || !els.jobs.contains(card)) return;
    var job = card._job;
    var p = card._parts;
    if (button === p.pause) {
      var action = job.paused || job.status === "paused" ? "resume" : "pause";
      act(p.pause, "POST", jobPath(job.id, action), undefined, action === "pause" ? "Paused" : "Resumed", job);
    } else if (button === p.run) {
      act(p.run, "POST", API + "/run-now", { job_id: job.id }, "Run requested for", job);
    } else if (button === p.del) {
      if (!window.confirm('Delete the schedule "' + job.name + '"?\nIts history is kept.')) return;
      act(p.del, "DELETE", jobPath(job.id), undefined, "Deleted", job).then(function (ok) {
        if (ok) {
          card.remove();
          cards.delete(String(job.id));
          els.empty.hidden = cards.size > 0;
        }
      });
    }
  }

  function buildModel() {
    var card = el("article", "card");
    card.setAttribute("data-testid", "job-card");

    var head = el("header", "card-head");
    var name = el("h3", "job-name");
    var badge = el("span", "badge");
    badge.setAttribute("data-testid", "job-status");
    var title = el("div", "card-title");
    var idLine = el("p", "job-id");
    idLine.setAttribute("data-testid", "job-id");
    title.append(name, idLine);
    head.append(title, badge);

    var facts = el("dl", "facts");
    var fields = {};
    [
      ["schedule", "Schedule"],
      ["retry", "Retry config"],
      ["period", "Period"],
      ["next_run", "Next run"],
      ["next_retry", "Next retry"],
      ["last_run", "Last run"],
      ["last_message", "Last message"],
    ].forEach(function (pair) {
      var row = el("div", "fact fact-" + pair[0].replace("_", "-"));
      var dd = el("dd");
      dd.setAttribute("data-field", pair[0]);
      row.append(el("dt", null, pair[1]), dd);
      facts.append(row);
      fields[pair[0]] = dd;
    });

    var actions = el("div", "actions");
    var pause = el("button", "btn btn-ghost");
    pause.type = "button";
    pause.setAttribute("data-testid", "pause-button");
    setButton(pause, "pause", "Pause"); // what most cards show: copied with the card, not built per card
    var run = el("button", "btn btn-ghost");
    run.type = "button";
    setButton(run, "play", "Run now");
    run.setAttribute("data-testid", "run-now-button");
    var del = el("button", "btn btn-icon btn-danger");
    del.type = "button";
    del.setAttribute("data-testid", "delete-button");
    del.append(icon("trash"));
    actions.append(pause, run, del);

    var scheduleText = el("span", "schedule");
    var tz = el("span", "tz");
    fields.schedule.append(scheduleText, tz);

    var strip = ns.stripModel ? ns.stripModel() : el("div");
    var open = el("a", "open-link", "Runs, chart and settings");
    open.setAttribute("data-testid", "open-job");
    actions.insertBefore(open, del);

    card.append(head, strip, facts, actions);
    return { card: card, parts: { name: name, idLine: idLine, badge: badge, fields: fields, scheduleText: scheduleText,
                                  tz: tz, pause: pause, run: run, del: del, strip: strip, open: open } };
  }

  function updateCard(card, job) {
    var p = card._parts;
    card._job = job;
    var status = STATUSES.indexOf(job.status) >= 0 ? job.status : "unknown";
    card.setAttribute("data-status", status);
    p.name.textContent = text(job.name, job.id);
    p.idLine.textContent = "id " + text(job.id);
    p.badge.className = "badge badge-" + status;
    p.badge.textContent = text(job.status, "unknown");

    // Times are in the job's zone (SPEC §5), so the zone is shown with them.
    p.tz.textContent = job.timezone ? String(job.timezone) : "";
    p.scheduleText.textContent = text(job.schedule);
    // Written the same way whether the job has an end or not (as `crawlsched list` writes it).
    p.fields.period.textContent = text(job.start_date, "…") + " → " + text(job.end_date, "no end");
    p.fields.next_run.textContent = text(job.next_run);
    // A retrying job's pending retry: when, and the number that attempt will be (SPEC §5).
    var retrying = status === "retrying" && Boolean(job.next_retry);
    p.fields.next_retry.parentNode.hidden = !retrying;
    p.fields.next_retry.textContent = retrying
      ? "attempt " + text(job.attempt) + " of " + text(Number(job.max_retries) + 1) + ", " + job.next_retry
      : "";
    p.fields.last_run.textContent = text(job.last_run, "never");
    p.fields.retry.textContent =
      "Max " + text(job.max_retries) + "x, Delay " + text(job.retry_delay) + "s";
    p.fields.last_message.textContent = text(job.last_message);
    p.open.setAttribute("aria-label", "Runs, chart and settings of " + text(job.name, job.id));
    if (ns.updateStrip) ns.updateStrip(card, job);

    var paused = Boolean(job.paused) || status === "paused";
    setButton(p.pause, paused ? "play" : "pause", paused ? "Resume" : "Pause");
    p.pause.setAttribute("aria-pressed", paused ? "true" : "false");
    var label = text(job.name, job.id);
    p.pause.setAttribute("aria-label", (paused ? "Resume " : "Pause ") + label);
    p.run.setAttribute("aria-label", "Run now: " + label); // the visible words first (WCAG 2.5.3)
    p.del.setAttribute("aria-label", "Delete " + label);
    p.del.title = "Delete";
  }

  function text(value, fallback) {
    if (value === null || value === undefined || value === "") {
      return fallback === undefined ? "—" : String(fallback);
    }
    return String(value);
  }

  // Icons are inline SVG built here (no icon font, no emoji font needed:
  // the page must look right on a machine without either).
  var ICONS = {
    trash: [
      "M3 6h18",
      "M8 6V4a1 1 0 0 1 1-1h6a1 1 0 0 1 1 1v2",
      "M19 6l-1 14a2 2 0 0 1-2 2H8a2 2 0 0 1-2-2L5 6",
      "M10 11v6",
      "M14 11v6",
    ],
    pause: ["M9 5v14", "M15 5v14"],
    play: ["M7 4.5v15l12-7.5z"],
  };

  function icon(name) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "16");
    svg.setAttribute("height", "16");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "icon icon-" + name);
    var path = document.createElementNS(SVG_NS, "path"); // one path of subpaths: fewer nodes, the same lines
    path.setAttribute("d", ICONS[name].join(" "));
    svg.appendChild(path);
    return svg;
  }

  // Sets a button's content to an icon and a text label.
  function setButton(button, iconName, label) {
    if (button._icon === iconName && button._label === label) return;
    button._icon = iconName;
    button._label = label;
    button.replaceChildren(icon(iconName), el("span", null, label));
  }

  // --- actions ----------------------------------------------------------------

  // Runs one card action; resolves true on success (false, or not at all
  // while one is in flight). The button is marked busy rather than disabled
  // so it keeps keyboard focus, and a double click does not send twice.
  function act(button, method, path, body, verb, job) {
    if (button.getAttribute("aria-busy") === "true") return Promise.resolve(false);
    button.setAttribute("aria-busy", "true");
    return api(method, path, body).then(
      function (data) {
        notice("ok", data.message ? String(data.message) : verb + " " + text(job.name, job.id));
        refresh();
        return true;
      },
      function (err) {
        if (err.status !== 401) notice("error", err.message);
        return false;
      }
    ).then(function (ok) {
      button.removeAttribute("aria-busy");
      return ok;
    });
  }

  var noticeTimer = null;
  function notice(kind, message) {
    els.notice.dataset.kind = kind;
    els.notice.textContent = message;
    els.notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () {
      els.notice.hidden = true;
    }, kind === "error" ? 8000 : 4000);
  }

  function showText(node, message) {
    node.textContent = message || "";
    node.hidden = !message;
  }

  // --- the add form -----------------------------------------------------------

  function formPayload(form) {
    var payload = {};
    var name = form.elements.name.value.trim();
    payload.name = name;
    ["start_date", "end_date", "url"].forEach(function (key) {
      var value = form.elements[key].value.trim();
      if (value) payload[key] = value;
    });
    // Numbers go as numbers; empty optional ones are left out so the API's
    // defaults apply (minute 0, the global retry settings).
    ["hour", "minute", "max_retries", "retry_delay"].forEach(function (key) {
      var raw = form.elements[key].value.trim();
      if (raw === "") return;
      var number = Number(raw);
      payload[key] = Number.isInteger(number) ? number : raw; // let the API name a bad value
    });
    return payload;
  }

  function onAddSubmit(event) {
    event.preventDefault();
    var form = els.form;
    showText(els.formError, "");
    var payload = formPayload(form);
    if (!payload.name) return fail("Name is required.", form.elements.name);
    if (payload.hour === undefined) return fail("Hour is required (0–23).", form.elements.hour);
    if (els.urlInput.required && !payload.url) {
      return fail("URL is required: the job file names no default crawl.", els.urlInput);
    }

    els.addButton.disabled = true;
    api("POST", API + "/job/add", payload).then(
      function (data) {
        notice("ok", data.message ? String(data.message) : "Schedule added");
        form.reset();
        refresh();
      },
      function (err) {
        if (err.status === 401) {
          showText(els.formError, "Give the access token, then add again.");
        } else {
          showText(els.formError, err.message);
        }
      }
    ).then(function () {
      els.addButton.disabled = false;
    });
  }

  function fail(message, field) {
    showText(els.formError, message);
    field.focus();
  }

  // --- start --------------------------------------------------------------------

  ns.api = api;
  ns.el = el;
  ns.text = text;
  ns.icon = icon;
  ns.notice = notice;
  ns.showText = showText;
  ns.refresh = function () {
    refresh();
  };
  ns.getToken = function () {
    return getToken() || memoryToken;
  };
  ns.clock = clock;
  ns.jobPath = jobPath;

  function init() {
    ns.started = true;
    els.form = document.getElementById("add-form");
    els.formError = document.getElementById("form-error");
    els.addButton = document.getElementById("add-button");
    els.jobs = document.getElementById("jobs");
    els.empty = document.getElementById("empty");
    els.count = document.getElementById("job-count");
    els.notice = document.getElementById("notice");
    els.live = document.getElementById("live");
    els.liveText = document.getElementById("live-text");
    els.tokenForm = document.getElementById("token-form");
    els.tokenInput = document.getElementById("f-token");
    els.tokenError = document.getElementById("token-error");
    els.configBanner = document.getElementById("config-banner");
    els.pausedBanner = document.getElementById("paused-banner");
    els.urlHelp = document.getElementById("url-help");
    els.urlInput = document.getElementById("f-url");

    els.form.addEventListener("submit", onAddSubmit);
    els.jobs.addEventListener("click", onCardClick);
    els.tokenForm.addEventListener("submit", onTokenSubmit);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) refresh();
    });
    if (ns.init) ns.init();
    refresh();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
