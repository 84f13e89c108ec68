/* Shared by the dashboard and the agent view: the live board (SSE), the PBX clock,
 * API calls with visible errors, toasts and formatting.  No libraries, no build step. */
"use strict";

const ACD = (() => {
  const SECTIONS = ["meta", "queues", "agents", "calls", "callbacks", "offers", "alarms", "intraday"];
  const STATE_LABELS = {
    available: "available", reserved: "ringing", on_call: "on call", wrap_up: "wrap-up",
    paused: "paused", logged_out: "logged out",
  };
  const PAUSE_REASONS = ["break", "lunch", "meeting", "training", "coaching", "admin", "technical"];
  const REASON_RE = /^[A-Za-z0-9 _.-]{1,32}$/;

  // --- the PBX clock: msg.now + wall time since it arrived × speed ---------------------

  const clock = { now: null, wall: 0, speed: 1 };

  function pbxNow() {
    if (clock.now === null) return null;
    return clock.now + (Date.now() / 1000 - clock.wall) * clock.speed;
  }

  // --- DOM helpers ---------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = value;
        else if (key === "dataset") Object.assign(node.dataset, value);
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value === true ? "" : value);
      }
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /** Set text only when it changed (keeps the DOM quiet and selections intact). */
  function setText(node, text) {
    const value = text === null || text === undefined ? "" : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  // --- formatting --------------------------------------------------------------------

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
    let s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  }

  function percent(value) {
    if (value === null || value === undefined || !isFinite(value)) return "—";
    return Math.round(value * 100) + "%";
  }

  const formatters = new Map();
  function formatter(zone, options) {
    const key = zone + JSON.stringify(options);
    let fmt = formatters.get(key);
    if (!fmt) {
      try {
        fmt = new Intl.DateTimeFormat("en-GB", { ...options, timeZone: zone || "UTC" });
      } catch (err) {   // an unknown zone name: fall back to UTC rather than fail
        fmt = new Intl.DateTimeFormat("en-GB", { ...options, timeZone: "UTC" });
      }
      formatters.set(key, fmt);
    }
    return fmt;
  }

  function clockTime(epoch, zone, seconds = true) {
    if (epoch === null || epoch === undefined) return "—";
    const options = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    if (seconds) options.second = "2-digit";
    return formatter(zone, options).format(new Date(epoch * 1000));
  }

  function clockDate(epoch, zone) {
    if (epoch === null || epoch === undefined) return "";
    return formatter(zone, { weekday: "short", day: "numeric", month: "short", year: "numeric" })
      .format(new Date(epoch * 1000));
  }

  function stateLabel(state) { return STATE_LABELS[state] || String(state || "").replace(/_/g, " "); }

  // --- toasts: every refusal or failure is shown, never swallowed ----------------------

  function toast(text, kind = "info", title = null) {
    let box = document.getElementById("toasts");
    if (!box) {
      box = el("div", { id: "toasts", "aria-live": "polite" });
      document.body.append(box);
    }
    const item = el("div", { class: "toast " + kind, role: kind === "error" ? "alert" : "status" },
      el("div", { class: "msg" }, title ? el("b", { text: title }) : null, text),
      el("button", { type: "button", title: "Dismiss", "aria-label": "Dismiss", text: "×",
                     onclick: () => item.remove() }));
    box.append(item);
    while (box.children.length > 4) box.firstChild.remove();
    setTimeout(() => item.remove(), kind === "error" ? 9000 : 4000);
    return item;
  }

  // --- API calls ---------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, id, message) {
      super(message);
      this.status = status;
      this.id = id;
    }
  }

  async function api(method, path, body, { quiet = false } = {}) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      if (!quiet) toast("The server cannot be reached: " + err.message, "error", "Network error");
      throw new ApiError(0, "network", err.message);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (response.status === 401) {
      window.location.assign("/login");
      throw new ApiError(401, "unauthenticated", "signed out");
    }
    if (!response.ok) {
      const message = data && data.message ? data.message : `HTTP ${response.status}`;
      const id = data && data.error ? data.error : "http_error";
      if (!quiet) toast(message, "error", `Refused (${id})`);
      throw new ApiError(response.status, id, message);
    }
    return data;
  }

  // --- the live board ----------------------------------------------------------------

  /**
   * Keeps `board` (section -> key -> record) in step with /api/v1/stream.
   * onUpdate(changedSections: Set, snapshot: bool) after each message; onStatus(status)
   * with "connecting" | "live" | "reconnecting" | "stale".
   */
  function liveBoard({ onUpdate, onStatus }) {
    const board = {};
    for (const section of SECTIONS) board[section] = {};
    let source = null;
    let lastMessage = 0;
    let status = null;
    let retryTimer = null;

    function setStatus(next) {
      if (next !== status) {
        status = next;
        onStatus(next);
      }
    }

    function apply(msg) {
      const changed = new Set();
      if (msg.type === "snapshot") {
        for (const section of SECTIONS) {
          board[section] = { ...((msg.set || {})[section] || {}) };
          changed.add(section);
        }
      } else {
        for (const [section, records] of Object.entries(msg.set || {})) {
          board[section] = board[section] || {};
          Object.assign(board[section], records);
          changed.add(section);
        }
        for (const [section, keys] of Object.entries(msg.del || {})) {
          if (!board[section]) continue;
          for (const key of keys) delete board[section][key];
          changed.add(section);
        }
      }
      const meta = board.meta.board;
      if (typeof msg.now === "number") {
        clock.now = msg.now;
        clock.wall = Date.now() / 1000;
        clock.speed = meta && typeof meta.speed === "number" && meta.speed > 0 ? meta.speed : 1;
      }
      onUpdate(changed, msg.type === "snapshot");
    }

    function connect() {
      clearTimeout(retryTimer);
      if (source) source.close();
      setStatus(status === null ? "connecting" : "reconnecting");
      source = new EventSource("/api/v1/stream");
      lastMessage = Date.now();
      source.onmessage = (event) => {
        lastMessage = Date.now();
        let msg;
        try {
          msg = JSON.parse(event.data);
        } catch (err) {
          console.warn("acd: unreadable stream message", err);
          return;
        }
        apply(msg);
        setStatus("live");
      };
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) {
          // The server answered with an error (e.g. the session expired): find out which.
          source.close();
          setStatus("reconnecting");
          api("GET", "/api/v1/me", undefined, { quiet: true })
            .then(() => { retryTimer = setTimeout(connect, 2000); })
            .catch(() => { retryTimer = setTimeout(connect, 5000); });
        } else {
          setStatus("reconnecting");    // EventSource retries by itself, then gets a fresh snapshot
        }
      };
    }

    // The hub speaks at least every 5 s: silence for longer means a stuck connection.
    setInterval(() => {
      if (status === "live" && Date.now() - lastMessage > 15000) {
        setStatus("stale");
        connect();
      }
    }, 2000);

    connect();
    return board;
  }

  function setLiveIndicator(node, status) {
    const labels = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", stale: "stale" };
    node.textContent = labels[status] || status;
    node.classList.toggle("is-live", status === "live");
    node.classList.toggle("is-down", status === "reconnecting" || status === "stale");
    node.title = status === "live" ? "Receiving live updates" : "Live updates interrupted; reconnecting";
  }

  /** Header clock and mode chip from meta.board. */
  function renderHeader(meta) {
    const now = pbxNow();
    const zone = meta ? meta.timezone : "UTC";
    const time = document.getElementById("clock-time");
    const date = document.getElementById("clock-date");
    if (time) setText(time, now === null ? "--:--:--" : clockTime(now, zone));
    if (date) setText(date, now === null ? "" : `${clockDate(now, zone)} · ${zone || "UTC"}`);
    const mode = document.getElementById("mode");
    if (mode && meta) {
      const speed = meta.speed && meta.speed !== 1 ? ` ×${meta.speed}` : "";
      setText(mode, `${String(meta.mode || "").toUpperCase()}${speed}`);
      mode.className = "chip mode-" + (meta.mode === "demo" ? "demo" : "live");
      mode.title = meta.mode === "demo" ? "Simulated centre (demo)" : "Connected to Asterisk";
    }
    const link = document.getElementById("link");
    if (link && meta) {
      const problems = [];
      if (meta.link_up === false) problems.push("PBX link down");
      if (meta.spooled) problems.push(`${meta.spooled} events spooled`);
      link.hidden = problems.length === 0;
      setText(link, problems.join(" · "));
    }
  }

  function renderWho(me) {
    const who = document.getElementById("who");
    if (!who || !me) return;
    who.replaceChildren(el("b", { text: me.name }), el("br"),
      el("span", { text: me.agent ? "agent" : me.role }));
  }

  return {
    SECTIONS, PAUSE_REASONS, REASON_RE, clock, pbxNow, el, svg, setText, duration, percent, clockTime,
    clockDate, stateLabel, toast, api, ApiError, liveBoard, setLiveIndicator, renderHeader, renderWho,
  };
})();
