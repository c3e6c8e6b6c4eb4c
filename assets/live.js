/* Cardiac Monitor live client.
 *
 * - Live ECG: asks the dashboard for a short-lived token (POST /live-token, CSRF header),
 *   subscribes to the ingest server's /live WebSocket and draws what arrives with
 *   Plotly.extendTraces in a sliding window (a bounded number of points: the window's
 *   seconds times the rate). Nothing here polls the database.
 * - Renders whatever arrives and ignores what it does not know: trace, beat, heart_rate,
 *   vitals, quality, alarm messages (shapes: ingest/processing.py, ingest/pipeline.py).
 * - Reconnects with back-off and shows when data is stale.
 * - Theme switch (dark / light) and audible alarms (after the user enables sound) with an
 *   audio pause countdown that never hides the visual alarm.
 * window.cmLive exposes counters that the browser tests read.
 */
(function () {
  "use strict";

  var FLUSH_MS = 100;            // screen updates: 10 per second
  var PLAYOUT_S = 0.3;           // drawn this far behind the newest sample, for a steady sweep
  var STALE_S = 3;               // no data for this long: the view says stale
  var MAX_BEATS = 300;           // beat markers kept in the browser
  var MINI_SECONDS = 8;          // central-station mini-trace
  var PAUSE_S = 120;             // audio pause
  var CLASS_COLOURS = {N: "#2ecc71", S: "#f1c40f", V: "#e74c3c", F: "#e67e22", Q: "#95a5a6"};

  var stats = {updates: 0, messages: 0, beats: 0, traceMessages: 0, points: 0, flushTimes: [],
               lagS: null, connects: 0, state: "idle", view: null};
  window.cmLive = stats;

  // ---------------------------------------------------------------- helpers
  function cookie(name) {
    var m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : "";
  }
  function setText(id, text, title) {
    var el = document.getElementById(id);
    if (!el) { return; }
    var value = el.querySelector(".cm-vital-value") || el;
    value.textContent = text;
    if (title) { el.title = title; }
  }
  function fmt(v, d) { return (v === null || v === undefined || !isFinite(v)) ? "–" : Number(v).toFixed(d); }
  // The /live URL the dashboard gave: a bare path is on this page's origin (behind a reverse proxy),
  // and an https page always uses wss:// (browsers refuse ws:// from it, and the token must not leak).
  function liveSocketUrl(url) {
    var secure = window.location.protocol === "https:";
    if (url.charAt(0) === "/") { return (secure ? "wss://" : "ws://") + window.location.host + url; }
    if (secure && url.indexOf("ws://") === 0) { return "wss://" + url.slice(5); }
    return url;
  }

  // ---------------------------------------------------------------- connection
  var conn = null;   // {key, ws, view, patientId, closed, retry, timer}

  function currentTarget() {
    var el = document.querySelector("[data-live-view]");
    if (!el) { return null; }
    var view = el.getAttribute("data-live-view");
    var pid = el.getAttribute("data-patient-id");
    return {view: view, patientId: pid ? parseInt(pid, 10) : null, key: view + ":" + (pid || "")};
  }

  function status(text, cls) {
    var el = document.getElementById("live-status");
    if (el) { el.textContent = text; el.className = "cm-live-status " + (cls || ""); }
  }

  function disconnect() {
    if (!conn) { return; }
    conn.closed = true;
    if (conn.timer) { clearTimeout(conn.timer); }
    if (conn.ws) { try { conn.ws.close(1000, "view changed"); } catch (e) { /* closing anyway */ } }
    conn = null;
    resetView();
  }

  function connect(target) {
    conn = {key: target.key, view: target.view, patientId: target.patientId, closed: false, retry: 0};
    open(conn);
  }

  function scheduleReconnect(c, delayS) {
    if (c.closed) { return; }
    c.retry += 1;
    var wait = delayS || Math.min(10, Math.pow(2, Math.min(c.retry, 4)) / 2);
    status("reconnecting in " + wait.toFixed(0) + " s…", "stale");
    c.timer = setTimeout(function () { if (!c.closed) { open(c); } }, wait * 1000);
  }

  function open(c) {
    stats.state = "token";
    fetch("/live-token", {method: "POST", credentials: "same-origin",
                          headers: {"X-CSRFToken": cookie("_csrf_token"), "Content-Type": "application/json"},
                          body: "{}"})
      .then(function (r) {
        if (r.status === 401) { window.location.assign("/login"); throw new Error("logged out"); }
        return r.json().then(function (body) { return {status: r.status, body: body}; });
      })
      .then(function (res) {
        if (c.closed) { return; }
        if (res.status !== 200) {
          status(res.body.error || "live data unavailable", "error");
          scheduleReconnect(c, 15);
          return;
        }
        var ws = new WebSocket(liveSocketUrl(res.body.url));
        c.ws = ws;
        ws.onopen = function () {
          var msg = {type: "subscribe", token: res.body.token, view: c.view};
          if (c.view === "patient") { msg.patient_id = c.patientId; }
          ws.send(JSON.stringify(msg));
        };
        ws.onmessage = function (ev) {
          if (c.closed) { return; }
          var msg;
          try { msg = JSON.parse(ev.data); } catch (e) { return; }
          stats.messages += 1;
          if (msg.type === "subscribed") { c.retry = 0; stats.connects += 1; stats.state = "open"; return; }
          handle(c, msg);
        };
        ws.onclose = function (ev) {
          stats.state = "closed:" + ev.code;
          if (c.closed) { return; }
          if (ev.code === 4403) { status("not permitted to watch this patient", "error"); scheduleReconnect(c, 30); return; }
          scheduleReconnect(c);
        };
        ws.onerror = function () { /* onclose follows and reconnects */ };
      })
      .catch(function () { if (!c.closed) { scheduleReconnect(c); } });
  }

  // ---------------------------------------------------------------- the patient view
  var pv = null;  // patient view state

  function resetView() {
    pv = null;
    mini = {};
  }

  function patientState() {
    if (!pv) {
      pv = {origin: null, starts: {}, ring: [], pending: [], beats: [], pendingBeats: [], newestT: null,
            lastX: null, lastData: 0, meta: null, fs: null, lastSampleEpoch: null};
    }
    return pv;
  }

  function handle(c, msg) {
    if (c.view === "central") { return handleCentral(msg); }
    var s = patientState();
    s.lastData = performance.now();
    switch (msg.type) {
      case "trace": return onTrace(s, msg);
      case "beat": return onBeat(s, msg);
      case "heart_rate":
        setText("live-hr", fmt(msg.hr_bpm, 0), "Heart rate: " + (msg.method || "method not reported"));
        return;
      case "vitals":
        if ("spo2" in msg) { setText("live-spo2", fmt(msg.spo2, 0)); }
        if ("pulse" in msg) { setText("live-pulse", fmt(msg.pulse, 0)); }
        if ("temperature" in msg) { setText("live-temp", fmt(msg.temperature, 1)); }
        if (typeof msg.hr_ecg === "number") { setText("live-hr", fmt(msg.hr_ecg, 0)); }
        return;
      case "quality":
        setText("live-quality", msg.readable === false ? (msg.condition || "poor") : "good",
                "Signal-quality index " + JSON.stringify(msg.sqi || []));
        return;
      default:
        return;  // alarm changes: the alarm list refreshes from storage
    }
  }

  function streamStart(s, msg) {
    var key = String(msg.session_id);
    if (!(key in s.starts) && typeof msg.t0 === "string" && typeof msg.seq === "number" && msg.fs) {
      s.starts[key] = Date.parse(msg.t0) / 1000 - msg.seq / msg.fs;
      s.fs = msg.fs;
    }
    return s.starts[key];
  }

  function onTrace(s, msg) {
    if (!Array.isArray(msg.values) || !msg.values.length || !msg.fs) { return; }
    stats.traceMessages += 1;
    var start = streamStart(s, msg);
    if (start === undefined) { return; }
    if (s.origin === null) { s.origin = start + msg.seq / msg.fs; }
    var t0 = start + msg.seq / msg.fs - s.origin;
    var n = msg.values[0].length;
    var ts = new Array(n);
    for (var i = 0; i < n; i++) { ts[i] = t0 + i / msg.fs; }
    s.pending.push({t: ts, y: msg.values});
    s.newestT = ts[n - 1];
    s.lastSampleEpoch = s.origin + ts[n - 1];
  }

  function onBeat(s, msg) {
    stats.beats += 1;
    var start = s.starts[String(msg.session_id)];
    var t = null;
    if (start !== undefined && typeof msg.seq === "number" && s.fs && s.origin !== null) {
      t = start + msg.seq / s.fs - s.origin;
    } else if (typeof msg.t === "string" && s.origin !== null) {
      t = Date.parse(msg.t) / 1000 - s.origin;
    }
    if (t === null || !isFinite(t)) { return; }
    var label = String(msg.label || "?");
    var probs = msg.probs || msg.probabilities || {};
    var lines = ["<b>" + label + "</b>"];
    Object.keys(probs).forEach(function (k) { lines.push("P(" + k + ") " + Number(probs[k]).toFixed(2)); });
    if (typeof msg.p_abnormal === "number") { lines.push("P(abnormal) " + msg.p_abnormal.toFixed(2)); }
    if (typeof msg.p_early_alarm === "number") { lines.push("P(early alarm) " + msg.p_early_alarm.toFixed(2)); }
    if (msg.early_alarm) { lines.push("<b>EARLY ALARM</b>"); }
    if (msg.af) { lines.push("in atrial fibrillation (RR): never called S"); }
    if (msg.quality_ok === false) { lines.push("poor signal"); }
    var colour = msg.quality_ok === false ? "#888888" : (CLASS_COLOURS[label] || "#bbbbbb");
    s.pendingBeats.push({t: t, text: msg.early_alarm ? label + "!" : label, hover: lines.join("<br>"),
                         colour: colour, size: msg.early_alarm ? 16 : 10, line: msg.early_alarm ? 3 : 0});
  }

  function graphDiv() {
    return document.querySelector("#ecg-graph .js-plotly-plot");
  }

  // Playout: blocks arrive a few times a second (one device frame each); drawing the samples
  // that are due on a steady clock, PLAYOUT_S behind the newest arrival, moves the sweep
  // smoothly at every screen update. The clock re-syncs when it drifts from the data.
  function takeDue(s) {
    if (!s.pending.length) { return []; }
    var now = performance.now() / 1000;
    var newest = s.newestT;
    if (s.offset === null || s.offset === undefined ||
        newest - (now - s.offset) > 1.0 || (now - s.offset) - newest > 1.0) {
      s.offset = now - newest + PLAYOUT_S;
    }
    var horizon = now - s.offset;
    var due = [];
    while (s.pending.length) {
      var blk = s.pending[0];
      var k = 0;
      while (k < blk.t.length && blk.t[k] <= horizon) { k++; }
      if (k === 0) { break; }
      if (k === blk.t.length) { due.push(s.pending.shift()); continue; }
      due.push({t: blk.t.slice(0, k), y: blk.y.map(function (lead) { return lead.slice(0, k); })});
      s.pending[0] = {t: blk.t.slice(k), y: blk.y.map(function (lead) { return lead.slice(k); })};
      break;
    }
    return due;
  }

  // Sweep mode: x = t mod window on fixed axes, a null point where the sweep wraps,
  // and an erase gap ahead of the newest sample (the bound on points leaves it empty).
  function flushPatient() {
    var s = pv;
    if (!s || !window.Plotly) { return; }
    var gd = graphDiv();
    if (!gd || !gd.layout || !gd.layout.meta || !gd.data) { return; }
    var meta = gd.layout.meta;
    var W = meta.window_s;
    var nLeads = meta.n_leads;
    var maxPoints = Math.floor((W - (meta.erase_s || 0.25)) * (s.fs || meta.fs));
    if (gd.layout.meta !== s.meta) {  // a new paper (speed or gain changed): refill it from our buffer
      s.meta = gd.layout.meta;
      s.pending = s.ring.concat(s.pending);
      s.ring = [];
      s.pendingBeats = s.beats.concat(s.pendingBeats);
      s.beats = [];
      s.lastX = null;
      s.offset = null;
    }
    var ready = takeDue(s);
    if (!ready.length && !s.pendingBeats.length) { return; }
    var started = performance.now();
    var xs = [], ys = [], idx = [], maxes = [], empty = [];
    for (var lead = 0; lead < nLeads; lead++) { xs.push([]); ys.push([]); idx.push(lead); maxes.push(maxPoints); empty.push([]); }
    ready.forEach(function (blk) {
      for (var i = 0; i < blk.t.length; i++) {
        var x = blk.t[i] % W;
        var wrap = s.lastX !== null && x < s.lastX;
        for (var l = 0; l < nLeads; l++) {
          if (wrap) { xs[l].push(null); ys[l].push(null); }
          xs[l].push(x);
          ys[l].push(l < blk.y.length ? blk.y[l][i] : null);
        }
        s.lastX = x;
        s.drawnT = blk.t[i];
      }
    });
    s.ring = s.ring.concat(ready);
    var kept = 0;
    for (var r = s.ring.length - 1; r >= 0; r--) {
      kept += s.ring[r].t.length;
      if (kept > maxPoints) { s.ring = s.ring.slice(r + 1); break; }
    }
    // Beat marks: new ones appended, those older than the sweep dropped (the bound is their count).
    var drawn = s.drawnT === undefined ? -Infinity : s.drawnT;
    var fresh = s.pendingBeats.filter(function (b) { return b.t <= drawn; });
    s.pendingBeats = s.pendingBeats.filter(function (b) { return b.t > drawn; });
    var oldest = drawn - (W - (meta.erase_s || 0.25));
    s.beats = s.beats.concat(fresh).filter(function (b) { return b.t > oldest; });
    var newMarks = fresh.filter(function (b) { return b.t > oldest; });
    function col(f) { return newMarks.map(f); }
    var update = {
      x: xs.concat([col(function (b) { return b.t % W; })]),
      y: ys.concat([col(function () { return meta.half_mv * 0.6; })]),
      text: empty.concat([col(function (b) { return b.text; })]),
      hovertext: empty.concat([col(function (b) { return b.hover; })]),
      "marker.color": empty.concat([col(function (b) { return b.colour; })]),
      "marker.size": empty.concat([col(function (b) { return b.size; })]),
      "marker.line.width": empty.concat([col(function (b) { return b.line; })])
    };
    // plotly.js takes per-trace bounds as {attribute: [bound per trace]}.
    var perTrace = maxes.concat([s.beats.length]);
    var bounds = {};
    Object.keys(update).forEach(function (key) { bounds[key] = perTrace; });
    try {
      Plotly.extendTraces(gd, update, idx.concat([meta.beat_trace]), bounds);
    } catch (err) {
      stats.errors = (stats.errors || 0) + 1;
      stats.lastError = String(err);
      return;
    }
    stats.lagS = Date.now() / 1000 - (s.origin + s.drawnT);
    stats.updates += 1;
    stats.points = gd.data[0].x.length;
    stats.beatMarks = gd.data[meta.beat_trace].x.length;
    stats.flushTimes.push(Date.now());
    if (stats.flushTimes.length > 200) { stats.flushTimes.shift(); }
    stats.lastFlushMs = performance.now() - started;
  }

  // ---------------------------------------------------------------- the central view
  var mini = {};  // patient id -> {values: [], last: ms}

  function handleCentral(msg) {
    if (msg.type !== "trace" || !Array.isArray(msg.values) || !msg.values.length) { return; }
    stats.traceMessages += 1;
    stats.centralTraces = (stats.centralTraces || 0) + 1;
    var key = String(msg.patient_id);
    var m = mini[key] || (mini[key] = {values: [], last: 0, fs: msg.fs});
    Array.prototype.push.apply(m.values, msg.values[0]);
    var keep = Math.ceil(MINI_SECONDS * msg.fs);
    if (m.values.length > keep) { m.values = m.values.slice(m.values.length - keep); }
    m.last = performance.now();
    m.fs = msg.fs;
  }

  function drawMini() {
    Object.keys(mini).forEach(function (key) {
      var canvas = document.querySelector('canvas[data-mini-patient="' + key + '"]');
      if (!canvas) { return; }
      var m = mini[key];
      var ctx = canvas.getContext("2d");
      var w = canvas.width, h = canvas.height;
      ctx.clearRect(0, 0, w, h);
      var stale = performance.now() - m.last > STALE_S * 1000;
      ctx.strokeStyle = stale ? "#666" : "#2ecc71";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      var n = Math.ceil(MINI_SECONDS * m.fs);
      var offset = n - m.values.length;
      for (var i = 0; i < m.values.length; i++) {
        var x = (offset + i) / n * w;
        var y = h / 2 - m.values[i] / 3.0 * h;
        if (i === 0) { ctx.moveTo(x, y); } else { ctx.lineTo(x, y); }
      }
      ctx.stroke();
      stats.points = m.values.length;
      stats.miniDrawn = (stats.miniDrawn || 0) + 1;
    });
    stats.updates += 1;
  }

  // Dash replaces the tiles, canvases included, on every refresh: redraw the mini-traces at once
  // (a MutationObserver runs before the next paint), so they never flash blank.
  var tilesObserver = null, observedTiles = null;

  function watchTiles() {
    var el = document.getElementById("central-tiles");
    if (el === observedTiles) { return; }
    if (tilesObserver) { tilesObserver.disconnect(); tilesObserver = null; }
    observedTiles = el;
    if (!el || !window.MutationObserver) { return; }
    tilesObserver = new MutationObserver(function () { if (conn && conn.view === "central") { drawMini(); } });
    tilesObserver.observe(el, {childList: true, subtree: true});
  }

  // ---------------------------------------------------------------- staleness
  function updateStatus() {
    if (!conn) { return; }
    if (conn.view === "patient") {
      var s = pv;
      var ecg = document.querySelector(".cm-ecg");
      if (!s || !s.lastData) { status(stats.state === "open" ? "connected, waiting for data…" : "connecting…", "stale"); return; }
      var age = (performance.now() - s.lastData) / 1000;
      if (age > STALE_S) {
        status("STALE: no data for " + age.toFixed(0) + " s", "stale");
        if (ecg) { ecg.classList.add("stale"); }
      } else {
        status("● live", "live");
        if (ecg) { ecg.classList.remove("stale"); }
      }
    } else {
      status(stats.state === "open" ? "● live" : "connecting…", stats.state === "open" ? "live" : "stale");
    }
  }

  // ---------------------------------------------------------------- theme
  // Bootstrap 5.3's data-bs-theme on <html>; the index page's inline script sets it before first paint.
  function currentTheme() {
    return document.documentElement.getAttribute("data-bs-theme") === "light" ? "light" : "dark";
  }

  // The server draws Plotly figures (history, trends, event strips, the live ECG's frame) in the
  // dark palette of dashboard/figures.py; in the light theme their frame, text, grid and the light
  // ECG line are swapped for light-theme colours here. Only colours of that palette are swapped:
  // ECG paper, traces on it and alarm colours stay as drawn.
  var LIGHT_COLOURS = {"#10151c": "#ffffff", "#0b0f14": "#ffffff", "#e8edf2": "#1b1f24",
    "#2b3643": "#dde3ea", "#2a3440": "#d8dee6", "#7fdbff": "#0b6e99"};
  var DARK_COLOURS = {};
  Object.keys(LIGHT_COLOURS).forEach(function (k) { DARK_COLOURS[LIGHT_COLOURS[k]] = DARK_COLOURS[LIGHT_COLOURS[k]] || k; });
  DARK_COLOURS["#ffffff"] = null;  // ambiguous (paper or plot): resolved per key below

  function themeFigures(theme) {
    if (!window.Plotly) { return; }
    document.querySelectorAll(".js-plotly-plot").forEach(function (gd) {
      var layout = gd.layout;
      if (!layout) { return; }
      if (gd.cmTheme === theme && gd.cmLayout === layout) { return; }  // done, and not redrawn since
      var swap = theme === "light" ? LIGHT_COLOURS : DARK_COLOURS;
      var darkOf = {paper_bgcolor: "#10151c", plot_bgcolor: "#0b0f14"};
      var update = {};
      function put(key, value) {
        if (typeof value !== "string") { return; }
        var to = swap[value.toLowerCase()];
        if (to === null) { to = darkOf[key]; }
        if (to) { update[key] = to; }
      }
      put("paper_bgcolor", layout.paper_bgcolor);
      put("plot_bgcolor", layout.plot_bgcolor);
      put("font.color", layout.font && layout.font.color);
      Object.keys(layout).forEach(function (key) {
        if (/^[xy]axis\d*$/.test(key) && layout[key]) { put(key + ".gridcolor", layout[key].gridcolor); }
      });
      var lines = [], colours = [];
      (gd.data || []).forEach(function (trace, i) {
        var c = trace.line && typeof trace.line.color === "string" ? swap[trace.line.color.toLowerCase()] : undefined;
        if (c) { lines.push(i); colours.push(c); }
      });
      gd.cmTheme = theme;
      gd.cmLayout = layout;
      if (Object.keys(update).length) { window.Plotly.relayout(gd, update); }
      if (lines.length) { window.Plotly.restyle(gd, {"line.color": colours}, lines); }
    });
  }

  function applyTheme(theme) {
    if (document.documentElement.getAttribute("data-bs-theme") !== theme) {
      document.documentElement.setAttribute("data-bs-theme", theme);
    }
    themeFigures(theme);
    var b = document.getElementById("cm-theme-toggle");
    if (b) {
      var label = theme === "light" ? "Dark" : "Light";
      if (b.textContent !== label) { b.textContent = label; }
      b.setAttribute("aria-pressed", theme === "light" ? "true" : "false");
    }
  }

  // ---------------------------------------------------------------- sound
  var sound = {on: false, ctx: null, pausedUntil: 0, nextAt: 0};
  var PATTERNS = {  // IEC 60601-1-8 inspired: distinct pulse counts, pitch and repetition
    high: {freq: 880, pulses: [0, 0.15, 0.3, 0.6, 0.75], every: 5},
    medium: {freq: 660, pulses: [0, 0.2, 0.4], every: 10},
    low: {freq: 520, pulses: [0, 0.25], every: 20}
  };

  function beep(freq, at) {
    var osc = sound.ctx.createOscillator();
    var gain = sound.ctx.createGain();
    osc.frequency.value = freq;
    osc.type = "square";
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(0.2, at + 0.01);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.12);
    osc.connect(gain).connect(sound.ctx.destination);
    osc.start(at);
    osc.stop(at + 0.13);
  }

  function highestActive() {
    var rank = {high: 3, medium: 2, low: 1};
    var best = null;
    document.querySelectorAll(".cm-alarm[data-alarm-priority]:not(.acknowledged)").forEach(function (el) {
      var p = el.getAttribute("data-alarm-priority");
      if (!best || rank[p] > rank[best]) { best = p; }
    });
    return best;
  }

  function soundTick() {
    var bar = document.getElementById("cm-sound-bar");
    var priority = highestActive();
    var now = Date.now() / 1000;
    if (bar) {
      if (sound.on && priority && now < sound.pausedUntil) {
        var left = Math.ceil(sound.pausedUntil - now);
        bar.innerHTML = '<span class="paused">AUDIO PAUSED ' + Math.floor(left / 60) + ":" +
          String(left % 60).padStart(2, "0") + "</span>";
      } else if (sound.on && priority) {
        bar.innerHTML = '<button class="btn" id="cm-audio-pause">Audio pause (' + PAUSE_S / 60 + " min)</button>";
      } else {
        bar.innerHTML = "";
      }
    }
    if (!sound.on || !priority || now < sound.pausedUntil || !sound.ctx || now < sound.nextAt) { return; }
    var pattern = PATTERNS[priority];
    var t = sound.ctx.currentTime + 0.05;
    pattern.pulses.forEach(function (dt) { beep(pattern.freq, t + dt); });
    sound.nextAt = now + pattern.every;
    stats.lastTone = priority;
  }

  document.addEventListener("click", function (ev) {
    var target = ev.target;
    if (!(target instanceof Element)) { return; }
    if (target.id === "cm-theme-toggle") {
      var theme = currentTheme() === "light" ? "dark" : "light";
      try { localStorage.setItem("cm-theme", theme); } catch (e) { /* private mode */ }
      applyTheme(theme);
    } else if (target.id === "cm-sound-toggle") {
      sound.on = !sound.on;
      if (sound.on && !sound.ctx) {
        var Ctx = window.AudioContext || window.webkitAudioContext;
        if (Ctx) { sound.ctx = new Ctx(); }
      }
      if (sound.ctx && sound.on) { sound.ctx.resume(); }
      sound.nextAt = 0;
      target.textContent = sound.on ? "Sound on" : "Sound off";
      target.setAttribute("data-sound", sound.on ? "on" : "off");
    } else if (target.id === "cm-audio-pause") {
      sound.pausedUntil = Date.now() / 1000 + PAUSE_S;
    }
  });

  // ---------------------------------------------------------------- main loop
  // The navigation link of the page on screen: aria-current for screen readers, and styled.
  function markNav() {
    var path = window.location.pathname;
    document.querySelectorAll(".cm-navlink").forEach(function (a) {
      var here = a.getAttribute("href") === path;
      if (here !== (a.getAttribute("aria-current") === "page")) {
        if (here) { a.setAttribute("aria-current", "page"); } else { a.removeAttribute("aria-current"); }
      }
    });
  }

  function tick() {
    markNav();
    watchTiles();
    var target = currentTarget();
    if (!target) { if (conn) { disconnect(); } }
    else if (!conn || conn.key !== target.key) { disconnect(); connect(target); stats.view = target.key; }
  }

  function start() {
    var theme = "dark";
    try { theme = localStorage.getItem("cm-theme") === "light" ? "light" : "dark"; } catch (e) { /* private mode */ }
    applyTheme(theme);
    setInterval(tick, 300);
    setInterval(function () {
      if (conn && conn.view === "patient") { flushPatient(); }
      else if (conn && conn.view === "central") { drawMini(); }
    }, FLUSH_MS);
    setInterval(updateStatus, 500);
    setInterval(soundTick, 500);
    setInterval(function () { applyTheme(currentTheme()); }, 1000);  // Dash re-renders the toggle
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); }
  else { start(); }
})();
