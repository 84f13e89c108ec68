/* The supervisor dashboard: queues, agents, waiting calls, call-backs, intraday charts and alarms,
 * kept live from /api/v1/stream; actions through the JSON API (refusals are shown as toasts). */
"use strict";

(() => {
  const { el, svg, setText, duration, percent, clockTime, stateLabel, api, toast, pbxNow } = ACD;
  const $ = (selector) => document.querySelector(selector);
  const STATES = ["available", "reserved", "on_call", "wrap_up", "paused", "logged_out"];

  let me = null;
  let canAct = false;
  let stateFilter = null;            // agent state shown alone (chip), or null
  let textFilter = "";
  let lastCharts = 0;

  const board = ACD.liveBoard({
    onUpdate: render,
    onStatus: (status) => ACD.setLiveIndicator($("#live"), status),
  });

  api("GET", "/api/v1/me").then((who) => {
    me = who;
    canAct = who.role === "supervisor" || who.role === "admin";
    document.body.classList.toggle("can-act", canAct);
    ACD.renderWho(who);
    render(new Set(ACD.SECTIONS), true);
  }).catch(() => {});

  // --- helpers ---------------------------------------------------------------------

  const meta = () => board.meta.board || {};
  const zone = () => meta().timezone || "UTC";
  const queueName = (id) => (board.queues[id] && board.queues[id].name) || id;
  const agentName = (id) => (board.agents[id] && board.agents[id].name) || id;
  const queueOrder = () => Object.keys(board.queues);
  const byId = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

  /** Keeps one <tr> per item, in order, creating/updating/removing as needed. */
  function syncRows(tbody, items, keyOf, create, update, emptyText) {
    const rows = tbody._rows || (tbody._rows = new Map());
    if (tbody._placeholder && items.length) {
      tbody._placeholder.remove();
      tbody._placeholder = null;
    }
    const seen = new Set();
    let previous = null;
    for (const item of items) {
      const key = keyOf(item);
      seen.add(key);
      let row = rows.get(key);
      if (!row) {
        row = create(item);
        rows.set(key, row);
      }
      update(row, item);
      const expected = previous ? previous.nextSibling : tbody.firstChild;
      if (expected !== row) tbody.insertBefore(row, expected);
      previous = row;
    }
    for (const [key, row] of rows) {
      if (!seen.has(key)) {
        row.remove();
        rows.delete(key);
      }
    }
    if (!items.length && !tbody._placeholder) {
      const columns = tbody.parentElement.querySelectorAll("thead tr:last-child th").length;
      tbody._placeholder = el("tr", { class: "placeholder" }, el("td", { colspan: columns, text: emptyText }));
      tbody.append(tbody._placeholder);
    }
    return rows;
  }

  function cell(row, name, className = "") {
    const td = el("td", { class: (name + " " + className).trim() });
    row._c[name] = td;
    row.append(td);
    return td;
  }

  /** Runs an API action from a button: busy while in flight, a toast either way. */
  async function act(button, method, path, body, done) {
    if (button) {
      button.disabled = true;
      button.classList.add("busy");
    }
    try {
      const result = await api(method, path, body);
      if (done) toast(done(result), "ok");
      return result;
    } catch (err) {
      return null;                    // api() has shown the refusal
    } finally {
      if (button) {
        button.disabled = false;
        button.classList.remove("busy");
      }
    }
  }

  // --- render ------------------------------------------------------------------------

  function render(changed, snapshot) {
    ACD.renderHeader(meta());
    if (changed.has("meta")) renderKpiHint();
    if (changed.has("alarms")) renderAlarms();
    if (changed.has("queues") || changed.has("agents")) renderQueues();
    if (changed.has("agents")) renderAgents();
    if (changed.has("calls") || changed.has("queues") || changed.has("agents")) renderCalls();
    if (changed.has("callbacks") || changed.has("queues")) renderCallbacks();
    const chartsDue = Date.now() - lastCharts > 5000 && changed.has("queues");
    if (snapshot || changed.has("intraday") || chartsDue) renderIntraday();
    tick();
  }

  function tick() {
    const now = pbxNow();
    ACD.renderHeader(meta());
    if (now === null) return;
    for (const row of ($("#queues tbody")._rows || new Map()).values()) {
      const queue = board.queues[row.dataset.queue];
      if (!queue) continue;
      const wait = queue.oldest_joined_at === null || queue.oldest_joined_at === undefined
        ? null : now - queue.oldest_joined_at;
      const td = row._c.longest;
      setText(td, wait === null ? "—" : duration(wait));
      const threshold = queue.sl_threshold_s || 20;
      td.classList.toggle("zero", wait === null);
      td.classList.toggle("warm", wait !== null && wait > threshold && wait <= 3 * threshold);
      td.classList.toggle("hot", wait !== null && wait > 3 * threshold);
    }
    for (const row of ($("#agents tbody")._rows || new Map()).values()) {
      const agent = board.agents[row.dataset.agent];
      if (agent) setText(row._c.since, agent.since === null ? "—" : duration(now - agent.since));
    }
    for (const row of ($("#calls tbody")._rows || new Map()).values()) {
      const call = board.calls[row.dataset.call];
      if (call) setText(row._c.wait, duration(now - call.joined_at));
    }
    for (const row of ($("#callbacks tbody")._rows || new Map()).values()) {
      const callback = board.callbacks[row.dataset.callback];
      if (callback) setText(row._c.elapsed, duration(now - callback.joined_at));
    }
    if (Date.now() - lastCharts > 60000) renderIntraday();   // moves the "now" marker
  }
  setInterval(tick, 1000);

  function renderKpiHint() {
    const asOf = meta().kpi_as_of;
    setText($("#kpi-as-of"), asOf ? `Today: database figures as of ${clockTime(asOf, zone())} + live events` : "");
  }

  // --- alarms ----------------------------------------------------------------------

  function renderAlarms() {
    const list = $("#alarms");
    const alarms = Object.values(board.alarms);
    const rank = { ami_down: 0, spooling: 1, long_wait: 2, service_level: 3, long_pause: 4 };
    alarms.sort((a, b) => (rank[a.kind] ?? 9) - (rank[b.kind] ?? 9) || byId(a.id, b.id));
    setText($("#alarm-count"), alarms.length);
    $("#panel-alarms").classList.toggle("has-alarms", alarms.length > 0);
    if (!alarms.length) {
      list.replaceChildren(el("li", { class: "none", text: "✓ No active alarms" }));
      return;
    }
    list.replaceChildren(...alarms.map((alarm) => el("li", { class: alarm.kind, dataset: { alarm: alarm.id } },
      el("span", { text: "⚠" }), el("span", { text: alarm.text }),
      alarm.since ? el("span", { class: "since", text: `since ${clockTime(alarm.since, zone(), false)}` }) : null)));
  }

  // --- queues ----------------------------------------------------------------------

  function createQueueRow(queue) {
    const row = el("tr", { dataset: { queue: queue.id } });
    row._c = {};
    cell(row, "name");
    for (const name of ["waiting", "longest", "ewt", "available", "on_call", "wrap_up", "paused", "offered",
                        "answered", "abandoned", "sl", "quality", "callbacks"]) {
      cell(row, name, "n");
    }
    return row;
  }

  function count(td, value) {
    setText(td, value);
    td.classList.toggle("zero", !value);
  }

  function updateQueueRow(row, queue) {
    const c = row._c;
    if (!c.name.firstChild) c.name.append(el("span"), el("span", { class: "id" }));
    setText(c.name.firstChild, queue.name);
    setText(c.name.lastChild, queue.id);
    count(c.waiting, queue.waiting);
    c.waiting.classList.toggle("busy", queue.waiting > 0);
    setText(c.ewt, queue.ewt_s === null || queue.ewt_s === undefined ? "—" : duration(queue.ewt_s));
    const staff = queue.agents || {};
    count(c.available, staff.available || 0);
    count(c.on_call, (staff.on_call || 0) + (staff.reserved || 0));
    count(c.wrap_up, staff.wrap_up || 0);
    count(c.paused, staff.paused || 0);
    count(c.offered, queue.offered);
    count(c.answered, queue.answered);
    count(c.abandoned, queue.abandoned);
    count(c.callbacks, queue.callbacks_pending);
    const sl = queue.service_level;
    c.sl.replaceChildren(el("span", { text: percent(sl) }),
      el("span", { class: "target", text: ` / ${percent(queue.sl_target)}` }));
    c.sl.classList.toggle("off", !!queue.off_target);
    c.sl.classList.toggle("on", sl !== null && sl !== undefined && !queue.off_target);
    c.sl.title = `Answered within ${queue.sl_threshold_s} s; target ${percent(queue.sl_target)}`;
    const quality = queue.quality_score;
    setText(c.quality, quality === null || quality === undefined ? "—" : quality.toFixed(1));
    c.quality.title = `${queue.evaluations || 0} evaluations of today's calls`;
  }

  function renderQueues() {
    const queues = Object.values(board.queues);
    syncRows($("#queues tbody"), queues, (q) => q.id, createQueueRow, updateQueueRow, "No queues");
    const sum = (key) => queues.reduce((total, q) => total + (q[key] || 0), 0);
    const staff = {};
    for (const agent of Object.values(board.agents)) staff[agent.state] = (staff[agent.state] || 0) + 1;
    const foot = $("#queues tfoot");
    foot.replaceChildren(el("tr", null,
      el("td", { text: "All queues" }), el("td", { class: "n", text: sum("waiting") }), el("td", { class: "n" }),
      el("td", { class: "n" }), el("td", { class: "n", text: staff.available || 0 }),
      el("td", { class: "n", text: (staff.on_call || 0) + (staff.reserved || 0) }),
      el("td", { class: "n", text: staff.wrap_up || 0 }), el("td", { class: "n", text: staff.paused || 0 }),
      el("td", { class: "n", text: sum("offered") }), el("td", { class: "n", text: sum("answered") }),
      el("td", { class: "n", text: sum("abandoned") }), el("td", { class: "n" }), el("td", { class: "n" }),
      el("td", { class: "n", text: sum("callbacks_pending") })));
  }

  // --- agents ----------------------------------------------------------------------

  function createAgentRow(agent) {
    const row = el("tr", { dataset: { agent: agent.id } });
    row._c = {};
    cell(row, "name").append(el("span", { text: agent.name }), el("span", { class: "id", text: agent.id }));
    cell(row, "team");
    cell(row, "state").append(el("span", { class: "badge" }));
    cell(row, "since", "n");
    cell(row, "reason");
    cell(row, "calls", "n");
    cell(row, "aht", "n");
    cell(row, "qa", "n");
    const actions = cell(row, "actions", "act");
    const button = (action, label, className = "") => el("button", {
      type: "button", class: className, dataset: { action }, text: label,
      onclick: (event) => agentAction(action, agent.id, event.currentTarget),
    });
    row._b = {
      pause: button("pause", "Pause"), resume: button("resume", "Resume", "primary"),
      login: button("login", "Log in"), logout: button("logout", "Log out", "danger"),
    };
    actions.append(row._b.pause, row._b.resume, row._b.login, row._b.logout);
    return row;
  }

  function updateAgentRow(row, agent) {
    const c = row._c;
    if (row.dataset.state && row.dataset.state !== agent.state) {
      row.classList.remove("flash");
      void row.offsetWidth;           // restart the animation
      row.classList.add("flash");
    }
    row.dataset.state = agent.state;
    row.className = row.className.replace(/\b(available|reserved|on_call|wrap_up|paused|logged_out)\b/g, "").trim();
    row.classList.add(agent.state);
    setText(c.name.firstChild, agent.name);
    setText(c.team, agent.team || "—");
    const badge = c.state.firstChild;
    badge.className = "badge " + agent.state;
    setText(badge, stateLabel(agent.state));
    c.reason.replaceChildren();
    if (agent.state === "paused") {
      c.reason.append(agent.reason || "");
    } else if (agent.queue) {
      c.reason.append(el("span", { class: "muted", text: queueName(agent.queue) }));
    }
    if (agent.pending) {
      c.reason.append(el("span", { class: "pending", title: "after the current call",
                                   text: `→ ${agent.pending.replace(/_/g, " ")}` }));
    }
    setText(c.calls, agent.calls_today);
    c.calls.classList.toggle("zero", !agent.calls_today);
    setText(c.aht, agent.aht_today_s ? duration(agent.aht_today_s) : "—");   // 0: no call finished yet
    setText(c.qa, agent.quality_today === null || agent.quality_today === undefined ? "—"
                                                                                     : agent.quality_today.toFixed(1));
    const b = row._b;
    const out = agent.state === "logged_out";
    const pausing = agent.pending === "pause";
    b.login.hidden = !out;
    b.pause.hidden = out || agent.state === "paused" || pausing;
    b.resume.hidden = !(agent.state === "paused" || pausing);
    b.resume.title = pausing && agent.state !== "paused" ? "Cancel the pause requested after this call" : "";
    b.logout.hidden = out || agent.pending === "logout";
  }

  function agentMatches(agent) {
    if (stateFilter && agent.state !== stateFilter) return false;
    if (!textFilter) return true;
    const haystack = `${agent.id} ${agent.name} ${agent.team || ""} ${stateLabel(agent.state)} ${agent.reason || ""}`;
    return haystack.toLowerCase().includes(textFilter);
  }

  function renderAgents() {
    const all = Object.values(board.agents).sort((a, b) => byId(a.id, b.id));
    const shown = all.filter(agentMatches);
    syncRows($("#agents tbody"), shown, (a) => a.id, createAgentRow, updateAgentRow,
      all.length ? "No agent matches the filter" : "No agents");
    setText($("#agent-count"), shown.length === all.length ? all.length : `${shown.length} / ${all.length}`);
    renderStateChips(all);
  }

  function renderStateChips(all) {
    const counts = {};
    for (const agent of all) counts[agent.state] = (counts[agent.state] || 0) + 1;
    const box = $("#state-chips");
    if (!box._chips) {
      box._chips = {};
      for (const state of STATES) {
        const chip = el("button", { type: "button", class: "badge " + state, dataset: { state },
                                    title: `Show only ${stateLabel(state)} agents`,
                                    onclick: () => {
                                      stateFilter = stateFilter === state ? null : state;
                                      renderAgents();
                                      tick();
                                    } },
          el("span", { text: stateLabel(state) + " " }), el("span", { class: "n" }));
        box._chips[state] = chip;
        box.append(chip);
      }
    }
    for (const state of STATES) {
      const chip = box._chips[state];
      setText(chip.lastChild, counts[state] || 0);
      chip.classList.toggle("active", stateFilter === state);
    }
  }

  $("#agent-filter").addEventListener("input", (event) => {
    textFilter = event.target.value.trim().toLowerCase();
    renderAgents();
    tick();
  });

  function agentAction(action, id, button) {
    const name = agentName(id);
    const path = `/api/v1/agents/${encodeURIComponent(id)}/${action}`;
    if (action === "pause") {
      openPause(id, button);
      return;
    }
    const done = {
      resume: (r) => (r.state === "paused" ? `${name}: resume requested` : `${name} resumed`),
      login: () => `${name} logged in`,
      logout: (r) => (r.pending === "logout" ? `${name} will log out after the call` : `${name} logged out`),
    }[action];
    act(button, "POST", path, {}, done);
  }

  // --- the pause pop-over --------------------------------------------------------------

  const pause = { agent: null, anchor: null };
  const pop = $("#pause-pop");
  const reasonSelect = $("#pause-reason");
  const otherInput = $("#pause-other");
  const pauseError = $("#pause-error");
  for (const reason of ACD.PAUSE_REASONS) reasonSelect.append(el("option", { value: reason, text: reason }));
  reasonSelect.append(el("option", { value: "__other", text: "other…" }));

  function openPause(id, anchor) {
    pause.agent = id;
    pause.anchor = anchor;
    setText($("#pause-title"), `Pause ${agentName(id)}`);
    reasonSelect.value = "break";
    otherInput.value = "";
    otherInput.hidden = true;
    pauseError.hidden = true;
    pop.hidden = false;
    const rect = anchor.getBoundingClientRect();
    const width = pop.offsetWidth || 260;
    pop.style.top = `${rect.bottom + window.scrollY + 6}px`;
    pop.style.left = `${Math.max(8, Math.min(rect.right + window.scrollX - width,
                                             document.documentElement.clientWidth - width - 8))}px`;
    reasonSelect.focus();
  }

  function closePause() {
    pop.hidden = true;
    pause.agent = null;
  }

  reasonSelect.addEventListener("change", () => {
    otherInput.hidden = reasonSelect.value !== "__other";
    if (!otherInput.hidden) otherInput.focus();
  });

  async function confirmPause() {
    const id = pause.agent;
    if (!id) return;
    const reason = reasonSelect.value === "__other" ? otherInput.value.trim() : reasonSelect.value;
    if (!ACD.REASON_RE.test(reason)) {
      setText(pauseError, "1 to 32 letters, digits, spaces, '_', '.' or '-'");
      pauseError.hidden = false;
      return;
    }
    const name = agentName(id);
    const result = await act($("#pause-confirm"), "POST", `/api/v1/agents/${encodeURIComponent(id)}/pause`,
      { reason }, (r) => (r.state === "paused" ? `${name} paused (${reason})`
                                               : `${name} will pause (${reason}) after the call`));
    if (result) closePause();
  }

  $("#pause-confirm").addEventListener("click", confirmPause);
  $("#pause-cancel").addEventListener("click", closePause);
  pop.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closePause();
    if (event.key === "Enter") {
      event.preventDefault();
      confirmPause();
    }
  });
  document.addEventListener("mousedown", (event) => {
    if (!pop.hidden && !pop.contains(event.target) && event.target !== pause.anchor) closePause();
  });

  // --- waiting calls ---------------------------------------------------------------

  function createCallRow(call) {
    const row = el("tr", { dataset: { call: call.call_id } });
    row._c = {};
    cell(row, "queue");
    cell(row, "place", "n");
    cell(row, "caller");
    cell(row, "wait", "n");
    const prio = cell(row, "priority");
    const step = (delta) => (event) => {
      const current = board.calls[call.call_id];
      if (!current) return;
      const priority = Math.max(-100, Math.min(100, (current.priority || 0) + delta));
      act(event.currentTarget, "POST", `/api/v1/calls/${encodeURIComponent(call.call_id)}/priority`,
        { priority }, () => `Priority of ${current.caller || call.call_id} set to ${priority}`);
    };
    row._b = {
      down: el("button", { type: "button", class: "icon act", dataset: { action: "priority-down" },
                           title: "Lower priority", text: "−", onclick: step(-1) }),
      up: el("button", { type: "button", class: "icon act", dataset: { action: "priority-up" },
                         title: "Raise priority", text: "+", onclick: step(1) }),
      value: el("span", { class: "v" }),
    };
    prio.append(el("span", { class: "prio" }, row._b.down, row._b.value, row._b.up));
    const move = cell(row, "move", "act");
    row._b.move = el("select", { class: "small", dataset: { action: "move" }, "aria-label": "Move to queue" });
    row._b.move.addEventListener("change", (event) => {
      const target = event.currentTarget.value;
      if (!target) return;
      const current = board.calls[call.call_id];
      event.currentTarget.value = "";
      act(event.currentTarget, "POST", `/api/v1/calls/${encodeURIComponent(call.call_id)}/move`,
        { queue: target }, () => `${(current && current.caller) || call.call_id} moved to ${queueName(target)}`);
    });
    row._b.ringing = el("span", { class: "muted" });
    move.append(row._b.move, row._b.ringing);
    return row;
  }

  function updateCallRow(row, call) {
    const c = row._c;
    const ringing = call.state === "ringing";
    row.classList.toggle("ringing", ringing);
    setText(c.queue, queueName(call.queue));
    if (ringing) {
      if (!c.place.querySelector(".tag")) {
        c.place.replaceChildren(el("span", { class: "tag ringing", text: "ringing" }));
      }
    } else {
      setText(c.place, call.place);
    }
    setText(c.caller, call.caller || "unknown");
    setText(row._b.value, call.priority > 0 ? `+${call.priority}` : call.priority);
    row._b.up.hidden = row._b.down.hidden = ringing;
    row._b.up.disabled = call.priority >= 100;
    row._b.down.disabled = call.priority <= -100;
    row._b.move.hidden = ringing;
    row._b.ringing.hidden = !ringing;
    setText(row._b.ringing, ringing && call.agent ? `→ ${agentName(call.agent)}` : "");
    const options = queueOrder().filter((id) => id !== call.queue);
    const key = call.queue + "|" + options.join(",");
    if (row._b.move._key !== key) {
      row._b.move._key = key;
      row._b.move.replaceChildren(el("option", { value: "", text: "Move to…" }),
        ...options.map((id) => el("option", { value: id, text: queueName(id) })));
    }
  }

  function renderCalls() {
    const order = queueOrder();
    const calls = Object.values(board.calls).sort((a, b) =>
      (a.state === "ringing") - (b.state === "ringing") || order.indexOf(a.queue) - order.indexOf(b.queue)
      || (a.place || 0) - (b.place || 0) || a.joined_at - b.joined_at);
    syncRows($("#calls tbody"), calls, (c) => c.call_id, createCallRow, updateCallRow, "No callers waiting");
    setText($("#call-count"), calls.filter((c) => c.state !== "ringing").length);
  }

  // --- call-backs ------------------------------------------------------------------

  function createCallbackRow(callback) {
    const row = el("tr", { dataset: { callback: callback.call_id } });
    row._c = {};
    cell(row, "queue");
    cell(row, "place");
    cell(row, "number");
    const since = cell(row, "since");
    since.append(el("span"), " ", el("span", { class: "muted" }, "(", el("span"), ")"));
    row._c.elapsed = since.lastChild.children[0];
    cell(row, "attempts", "n");
    const cancel = el("button", { type: "button", class: "danger", dataset: { action: "cancel" }, text: "Cancel" });
    cancel.addEventListener("click", () => {
      // Two steps, without a blocking dialog: the first click arms the button for 4 s.
      if (!cancel.classList.contains("confirming")) {
        cancel.classList.add("confirming");
        cancel.textContent = "Confirm";
        cancel._timer = setTimeout(() => {
          cancel.classList.remove("confirming");
          cancel.textContent = "Cancel";
        }, 4000);
        return;
      }
      clearTimeout(cancel._timer);
      cancel.classList.remove("confirming");
      cancel.textContent = "Cancel";
      const current = board.callbacks[callback.call_id];
      act(cancel, "DELETE", `/api/v1/callbacks/${encodeURIComponent(callback.call_id)}`, undefined,
        () => `Call-back to ${(current && current.number) || callback.call_id} cancelled`);
    });
    cell(row, "actions", "act").append(cancel);
    return row;
  }

  function updateCallbackRow(row, callback) {
    const c = row._c;
    setText(c.queue, queueName(callback.queue));
    let label = callback.state;
    if (callback.state === "waiting" && callback.place) label = `#${callback.place} in queue`;
    if (callback.state === "scheduled" && callback.due_at) label = `due ${clockTime(callback.due_at, zone(), false)}`;
    c.place.replaceChildren(el("span", { class: "tag " + callback.state, text: label }));
    setText(c.number, callback.number);
    setText(c.since.firstChild, clockTime(callback.joined_at, zone(), false));
    setText(c.attempts, callback.attempts);
  }

  function renderCallbacks() {
    const order = queueOrder();
    const callbacks = Object.values(board.callbacks).sort((a, b) =>
      order.indexOf(a.queue) - order.indexOf(b.queue) || a.joined_at - b.joined_at);
    syncRows($("#callbacks tbody"), callbacks, (c) => c.call_id, createCallbackRow, updateCallbackRow,
      "No call-backs pending");
    setText($("#callback-count"), callbacks.length);
  }

  // --- intraday charts (hand-drawn SVG) ---------------------------------------------

  /** A round axis maximum at or above `value` whose half is a whole number too. */
  function niceCeiling(value) {
    const half = Math.max(2, value / 2);
    const power = Math.pow(10, Math.floor(Math.log10(half)));
    for (const step of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
      const candidate = step * power;
      if (candidate >= half && Number.isInteger(candidate)) return 2 * candidate;
    }
    return 20 * power;
  }

  function renderIntraday() {
    lastCharts = Date.now();
    const box = $("#intraday");
    const step = meta().interval_minutes || 30;
    const slots = Math.round(1440 / step);
    const tz = zone();
    const slotOfEpoch = (epoch) => {
      const [h, m] = clockTime(epoch, tz, false).split(":").map(Number);
      return Math.floor((h * 60 + m) / step);
    };
    const slotOf = (iso) => slotOfEpoch(Date.parse(iso) / 1000);
    const series = {};
    let first = Infinity;
    let last = -Infinity;
    for (const id of queueOrder()) {
      const data = board.intraday[id] || {};
      const s = { today: new Array(slots).fill(0), yesterday: new Array(slots).fill(0),
                  live: new Array(slots).fill(0), sl: new Array(slots).fill(null) };
      for (const [name, points] of [["today", data.today], ["yesterday", data.yesterday]]) {
        for (const point of points || []) {
          const i = slotOf(point.start);
          if (!(i >= 0 && i < slots)) continue;
          s[name][i] = point.offered || 0;
          if (name === "today") s.sl[i] = point.service_level;
          if (point.offered) {
            first = Math.min(first, i);
            last = Math.max(last, i);
          }
        }
      }
      series[id] = s;
    }
    const now = pbxNow();
    const nowSlot = now === null ? null : slotOfEpoch(now);
    // The series are re-read from the database every few seconds; calls offered since the last
    // read are in the queue's live total only: show them on the current interval, marked as such.
    if (nowSlot !== null && nowSlot >= 0 && nowSlot < slots) {
      for (const [id, s] of Object.entries(series)) {
        const counted = s.today.reduce((total, value) => total + value, 0);
        const extra = ((board.queues[id] || {}).offered || 0) - counted;
        if (extra > 0) {
          s.live[nowSlot] = extra;
          first = Math.min(first, nowSlot);
          last = Math.max(last, nowSlot);
        }
      }
    }
    if (nowSlot !== null) {
      first = Math.min(first, nowSlot);
      last = Math.max(last, nowSlot);
    }
    if (!isFinite(first)) {
      first = Math.floor(8 * 60 / step);
      last = Math.floor(18 * 60 / step);
    }
    first -= first % Math.max(1, Math.round(60 / step));     // start on the hour
    const minimum = Math.round(8 * 60 / step);
    let end = Math.max(last, first + minimum - 1);
    if (end >= slots) {
      end = slots - 1;
      first = Math.max(0, end - minimum + 1);
    }
    const span = { first, end, step, nowMinutes: now === null ? null : (() => {
      const [h, m] = clockTime(now, tz, false).split(":").map(Number);
      return h * 60 + m + (now % 60) / 60;
    })() };
    setText($("#intraday-hint"), `${pad(first * step)}–${pad((end + 1) * step)} · ${step}-minute intervals · ${tz}`);
    const charts = queueOrder().map((id) => chart(id, series[id], span));
    box.replaceChildren(...charts);
  }

  function pad(minutes) {
    const h = Math.floor(minutes / 60) % 24;
    const m = minutes % 60;
    return `${h < 10 ? "0" : ""}${h}:${m < 10 ? "0" : ""}${m}`;
  }

  function chart(id, s, w) {
    const queue = board.queues[id] || {};
    const W = 340;
    const H = 165;
    const m = { l: 28, r: 36, t: 10, b: 22 };
    const plotW = W - m.l - m.r;
    const plotH = H - m.t - m.b;
    const n = w.end - w.first + 1;
    const slotW = plotW / n;
    let peak = 0;
    for (let i = w.first; i <= w.end; i++) peak = Math.max(peak, s.today[i] + s.live[i], s.yesterday[i]);
    const yMax = niceCeiling(peak);
    const y = (v) => m.t + plotH * (1 - v / yMax);
    const ySl = (v) => m.t + plotH * (1 - v);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
                              "aria-label": `${queue.name || id}: offered calls per interval and service level` });
    for (const fraction of [0, 0.5, 1]) {
      const yy = m.t + plotH * (1 - fraction);
      root.append(svg("line", { class: fraction === 0 ? "axis" : "gridline", x1: m.l, x2: W - m.r, y1: yy, y2: yy }));
      const value = Math.round(yMax * fraction * 10) / 10;
      root.append(svg("text", { class: "tick", x: m.l - 5, y: yy + 3.5, "text-anchor": "end" }, String(value)));
      root.append(svg("text", { class: "tick right", x: W - m.r + 5, y: yy + 3.5, "text-anchor": "start" },
        `${Math.round(fraction * 100)}%`));
    }
    const hoursPerLabel = Math.max(1, Math.ceil((n * w.step) / 60 / 8));
    for (let i = w.first; i <= w.end + 1; i++) {
      const minutes = i * w.step;
      if (minutes % (hoursPerLabel * 60) !== 0) continue;
      const x = m.l + (i - w.first) * slotW;
      root.append(svg("line", { class: "axis", x1: x, x2: x, y1: m.t + plotH, y2: m.t + plotH + 4 }));
      root.append(svg("text", { class: "tick", x, y: H - 6, "text-anchor": "middle" }, pad(minutes)));
    }
    let any = false;
    for (let i = w.first; i <= w.end; i++) {
      const x = m.l + (i - w.first) * slotW;
      const group = svg("g", null);
      const yesterday = s.yesterday[i];
      const today = s.today[i];
      const live = s.live[i];
      if (yesterday) group.append(svg("rect", { class: "bar-yesterday", x: x + slotW * 0.12, y: y(yesterday),
                                                width: slotW * 0.36, height: m.t + plotH - y(yesterday) }));
      if (today) group.append(svg("rect", { class: "bar-today", x: x + slotW * 0.5, y: y(today),
                                            width: slotW * 0.36, height: m.t + plotH - y(today) }));
      if (live) group.append(svg("rect", { class: "bar-live", x: x + slotW * 0.5, y: y(today + live),
                                           width: slotW * 0.36, height: y(today) - y(today + live) }));
      any = any || !!today || !!yesterday || !!live;
      group.append(svg("rect", { x, y: m.t, width: slotW, height: plotH, fill: "transparent" },
        svg("title", null, `${pad(i * w.step)}–${pad((i + 1) * w.step)}: offered today ${today + live}` +
          `${live ? ` (${live} since the last database read)` : ""}, ` +
          `yesterday ${yesterday}, service level ${percent(s.sl[i])}`)));
      root.append(group);
    }
    if (typeof queue.sl_target === "number") {
      root.append(svg("line", { class: "target", x1: m.l, x2: W - m.r, y1: ySl(queue.sl_target),
                                y2: ySl(queue.sl_target) },
        svg("title", null, `Target ${percent(queue.sl_target)}`)));
    }
    let path = "";
    let pen = false;
    const dots = [];
    for (let i = w.first; i <= w.end; i++) {
      const value = s.sl[i];
      if (value === null || value === undefined) {
        pen = false;
        continue;
      }
      const x = m.l + (i - w.first + 0.5) * slotW;
      path += `${pen ? "L" : "M"}${x.toFixed(1)},${ySl(value).toFixed(1)}`;
      pen = true;
      dots.push([x, ySl(value)]);
    }
    if (path) root.append(svg("path", { class: "sl-line", d: path }));
    for (const [x, yy] of dots) root.append(svg("circle", { class: "sl-dot", cx: x, cy: yy, r: 2.6 }));
    if (w.nowMinutes !== null) {
      const x = m.l + (w.nowMinutes / w.step - w.first) * slotW;
      if (x >= m.l && x <= W - m.r) {
        root.append(svg("line", { class: "now", x1: x, x2: x, y1: m.t, y2: m.t + plotH },
          svg("title", null, "now")));
      }
    }
    if (!any) {
      root.append(svg("text", { class: "nodata", x: m.l + plotW / 2, y: m.t + plotH / 2, "text-anchor": "middle" },
        "No calls offered yet"));
    }
    const figures = el("div", { class: "figures" }, `Offered today ${queue.offered ?? 0} · SL `,
      el("span", { class: queue.off_target ? "off" : "", text: percent(queue.service_level) }),
      ` (target ${percent(queue.sl_target)} in ${queue.sl_threshold_s ?? "?"} s)`);
    return el("div", { class: "chart", dataset: { chart: id } },
      el("h3", { text: queue.name || id, title: queue.name || id }), figures, root);
  }
})();
