/* The agent desk: own state with ticking time in state, Ready / Pause / Wrap-up done / Log out,
 * the screen pop of the call offered (caller, queue, IVR answers, call-back) and the agent's queues. */
"use strict";

(() => {
  const { el, setText, duration, percent, stateLabel, api, toast, pbxNow } = ACD;
  const $ = (selector) => document.querySelector(selector);

  let agentId = null;
  const board = ACD.liveBoard({
    onUpdate: render,
    onStatus: (status) => ACD.setLiveIndicator($("#live"), status),
  });

  api("GET", "/api/v1/me").then((who) => {
    agentId = who.agent;
    ACD.renderWho(who);
    render();
  }).catch(() => {});

  const select = $("#pause-reason");
  for (const reason of ACD.PAUSE_REASONS) select.append(el("option", { value: reason, text: reason }));

  function me() {
    if (agentId) return board.agents[agentId] || null;
    const mine = Object.values(board.agents);      // an agent token sees only its own agent
    return mine.length === 1 ? mine[0] : null;
  }

  // --- actions ---------------------------------------------------------------------

  async function act(button, verb, body, done) {
    const agent = me();
    if (!agent) return;
    button.disabled = true;
    button.classList.add("busy");
    try {
      const result = await api("POST", `/api/v1/agents/${encodeURIComponent(agent.id)}/${verb}`, body || {});
      toast(done(result), "ok");
    } catch (err) {
      /* api() has shown the refusal */
    } finally {
      button.classList.remove("busy");
      render();
    }
  }

  $("#btn-ready").addEventListener("click", (event) =>
    act(event.currentTarget, "ready", {}, (r) => (r.state === "logged_out" ? "Logging in…" : "You are ready")));
  $("#btn-pause").addEventListener("click", (event) =>
    act(event.currentTarget, "pause", { reason: select.value },
      (r) => (r.state === "paused" ? `Paused (${select.value})` : `You will pause (${select.value}) after this call`)));
  $("#btn-wrapup").addEventListener("click", (event) =>
    act(event.currentTarget, "wrapup", {}, () => "Wrap-up done"));
  $("#btn-logout").addEventListener("click", (event) =>
    act(event.currentTarget, "logout", {},
      (r) => (r.pending === "logout" ? "You will be logged out after this call" : "Logged out")));

  // --- render ------------------------------------------------------------------------

  function render() {
    ACD.renderHeader(board.meta.board || {});
    const agent = me();
    if (agent) {
      setText($("#agent-name"), agent.name);
      setText($("#agent-ident"), `${agent.id}${agent.team ? " · team " + agent.team : ""} · ` +
        (agent.queues || []).map((id) => (board.queues[id] && board.queues[id].name) || id).join(", "));
      document.title = `${agent.name} · Agent desk`;
      const badge = $("#state");
      badge.className = "badge " + agent.state;
      setText(badge, stateLabel(agent.state));
      setText($("#reason"), agent.state === "paused" && agent.reason ? agent.reason : "");
      const pending = $("#pending");
      pending.hidden = !agent.pending;
      setText(pending, agent.pending ? `${agent.pending.replace(/_/g, " ")} after this call` : "");
      setText($("#calls-today"), agent.calls_today);
      setText($("#aht-today"), agent.aht_today_s ? duration(agent.aht_today_s) : "—");   // 0: none finished yet
      const out = agent.state === "logged_out";
      const pausing = agent.pending === "pause";
      const busy = (id) => $(id).classList.contains("busy");
      $("#btn-ready").disabled = busy("#btn-ready") || !(out || agent.state === "paused" || pausing);
      $("#btn-ready").textContent = out ? "Log in" : "Ready";
      $("#btn-pause").disabled = busy("#btn-pause") || out || agent.state === "paused" || pausing;
      $("#btn-wrapup").disabled = busy("#btn-wrapup") || agent.state !== "wrap_up";
      $("#btn-logout").disabled = busy("#btn-logout") || out || agent.pending === "logout";
    }
    renderPop(agent);
    renderQueues();
    tick();
  }

  function renderPop(agent) {
    const offer = agent ? board.offers[agent.id] : Object.values(board.offers)[0];
    const pop = $("#pop");
    pop.hidden = !offer;
    $("#idle").hidden = !!offer;
    if (!offer) {
      const state = agent ? agent.state : null;
      const titles = {
        available: ["Ready for calls", "The caller's details appear here as soon as a call is offered to you."],
        wrap_up: ["Wrap-up", "Finish your notes, then press “Wrap-up done” to take the next call."],
        paused: ["Paused", "Press “Ready” when you are back."],
        logged_out: ["Logged out", "Press “Log in” to start taking calls."],
      };
      const [title, text] = titles[state] || ["No call right now", ""];
      setText($("#idle-title"), title);
      setText($("#idle-text"), text);
      pop.dataset.call = "";
      return;
    }
    pop.dataset.call = offer.call_id;
    pop.classList.toggle("reserved", offer.state === "reserved");
    setText($("#pop-title"), offer.state === "reserved" ? "Incoming call — ringing" : "On call");
    setText(pop.querySelector(".caller"), offer.caller || "unknown caller");
    setText(pop.querySelector(".queue"), offer.queue_name || offer.queue);
    $("#pop-callback").hidden = !offer.callback;
    const answers = Object.entries(offer.ivr || {});
    const list = pop.querySelector(".ivr");
    const key = JSON.stringify(answers);
    if (list._key !== key) {
      list._key = key;
      list.replaceChildren(...answers.flatMap(([name, value]) => [
        el("dt", { text: name.replace(/_/g, " ") }),
        el("dd", { text: value === true ? "yes" : value === false ? "no"
                                     : value === null ? "—" : typeof value === "object" ? JSON.stringify(value)
                                     : String(value) }),
      ]));
    }
    list.hidden = answers.length === 0;
    pop.querySelector(".ivr-none").hidden = answers.length > 0;
  }

  function renderQueues() {
    const tbody = $("#my-queues tbody");
    const queues = Object.values(board.queues);
    if (!queues.length) {
      tbody.replaceChildren(el("tr", { class: "placeholder" }, el("td", { colspan: 6, text: "No queues" })));
      return;
    }
    tbody.replaceChildren(...queues.map((queue) => {
      const sl = el("td", { class: "n sl" + (queue.off_target ? " off" : ""), text: percent(queue.service_level) });
      return el("tr", { dataset: { queue: queue.id } },
        el("td", { class: "name", text: queue.name }),
        el("td", { class: "n waiting", text: queue.waiting }),
        el("td", { class: "n longest", dataset: { since: queue.oldest_joined_at ?? "" } }),
        el("td", { class: "n", text: queue.ewt_s === null || queue.ewt_s === undefined ? "—" : duration(queue.ewt_s) }),
        el("td", { class: "n", text: (queue.agents || {}).available || 0 }),
        sl);
    }));
  }

  function tick() {
    ACD.renderHeader(board.meta.board || {});
    const now = pbxNow();
    if (now === null) return;
    const agent = me();
    if (agent) {
      setText($("#since"), agent.since === null || agent.since === undefined ? "—" : duration(now - agent.since));
    }
    const offer = agent ? board.offers[agent.id] : null;
    if (offer) {
      setText($("#pop-phase"), offer.state === "reserved" ? "Ringing" : "Talk time");
      setText($("#pop-elapsed"), offer.since ? duration(now - offer.since) : "—");
      setText($("#pop-waited"), offer.joined_at && offer.since
        ? `waited ${duration(offer.since - offer.joined_at)} in queue` : "");
    }
    for (const cell of document.querySelectorAll("#my-queues td.longest")) {
      const since = parseFloat(cell.dataset.since);
      setText(cell, isFinite(since) ? duration(now - since) : "—");
    }
  }
  setInterval(tick, 1000);

  // --- my evaluations (quality monitoring): read, and acknowledge each once ---------------

  async function loadEvaluations() {
    let body;
    try {
      body = await api("GET", "/api/v1/evaluations", undefined, { quiet: true });
    } catch (err) {
      return;
    }
    const list = $("#my-evaluations");
    setText($("#evaluation-count"), body.evaluations.length);
    if (!body.evaluations.length) {
      list.replaceChildren(el("li", { class: "none", text: "No evaluations yet." }));
      return;
    }
    const at = (iso) => (iso ? new Date(iso).toLocaleString("en-GB", { day: "numeric", month: "short",
                                                                       hour: "2-digit", minute: "2-digit" }) : "");
    list.replaceChildren(...body.evaluations.map((e) => {
      const item = el("li", { dataset: { evaluation: e.evaluation_id } },
        el("span", { class: "score " + (e.score >= 80 ? "good" : e.score >= 60 ? "fair" : "poor"),
                     text: Number(e.score).toFixed(1) }),
        el("span", { class: "meta", text: `call ${e.call_id} · ${e.scorecard} · by ${e.evaluator} · ${at(e.ts)}` }),
        e.critical_failed ? el("span", { class: "crit", text: "critical failed" }) : null,
        el("span", { class: "ack" + (e.acknowledged ? " yes" : ""),
                     text: e.acknowledged ? `acknowledged ${at(e.acknowledged_at)}` : "not acknowledged" }));
      if (!e.acknowledged) {
        item.append(el("button", { type: "button", class: "small primary", dataset: { action: "acknowledge" },
                                   text: "Acknowledge", onclick: (event) => acknowledge(event.currentTarget, e) }));
      }
      if (e.comments) item.append(el("div", { class: "comment", text: e.comments }));
      return item;
    }));
  }

  async function acknowledge(button, evaluation) {
    button.disabled = true;
    try {
      await api("POST", `/api/v1/evaluations/${encodeURIComponent(evaluation.evaluation_id)}/acknowledge`, { comment: "" });
      toast("Evaluation acknowledged", "ok");
    } catch (err) {
      button.disabled = false;     /* api() has shown the refusal */
    }
    await loadEvaluations();
  }

  loadEvaluations();
  setInterval(loadEvaluations, 60000);
})();
