/* The quality page: quality beside AHT/FCR/CSAT per queue, team and agent; the week's proposed
 * calls; recorded calls with filters; a call opened with its recording (same-origin <audio>, the
 * session cookie authenticates it), IVR path, timeline and the scorecard of its queue; calibration.
 * No inline scripts or styles (CSP); every refusal is shown by ACD.api. */
"use strict";

(() => {
  const { el, setText, duration, percent, api, toast } = ACD;
  const $ = (selector) => document.querySelector(selector);
  const REASONS = { low_csat: "low CSAT", repeat_caller: "repeat caller", long_call: "long call", random: "random" };

  const state = { me: null, queues: {}, agents: {}, summary: null, by: "queues", call: null, card: null };

  // --- helpers ---------------------------------------------------------------------------

  function isoDay(date) {
    const pad = (n) => (n < 10 ? "0" + n : String(n));
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  }

  function when(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (isNaN(date)) return iso;
    return date.toLocaleString("en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
                                          second: "2-digit", hourCycle: "h23" });
  }

  function scoreText(value) {
    return value === null || value === undefined ? "—" : (Math.round(value * 10) / 10).toFixed(1);
  }

  function scoreClass(value) {
    if (value === null || value === undefined) return "";
    return value >= 80 ? "good" : value >= 60 ? "fair" : "poor";
  }

  function agentName(id) { return (state.agents[id] && state.agents[id].name) || id || "—"; }
  function queueName(id) { return (state.queues[id] && state.queues[id].name) || id || "—"; }

  function period() {
    const params = new URLSearchParams({ from: $("#from").value, to: $("#to").value });
    return params;
  }

  function placeholder(tbody, columns, text) {
    tbody.replaceChildren(el("tr", { class: "placeholder" }, el("td", { colspan: columns, text })));
  }

  // --- start ------------------------------------------------------------------------------

  async function start() {
    const today = new Date();
    const weekAgo = new Date(today.getTime() - 6 * 86400000);
    $("#from").value = isoDay(weekAgo);
    $("#to").value = isoDay(today);
    try {
      state.me = await api("GET", "/api/v1/me");
    } catch (err) {
      return;
    }
    ACD.renderWho(state.me);
    const supervisor = state.me.role === "supervisor" || state.me.role === "admin";
    document.body.classList.toggle("can-evaluate", supervisor);
    $("#card-readonly").hidden = supervisor;
    $("#submit-evaluation").hidden = !supervisor;
    const [queues, agents] = await Promise.all([api("GET", "/api/v1/queues"), api("GET", "/api/v1/agents")]);
    for (const queue of queues.queues) state.queues[queue.id] = queue;
    for (const agent of agents.agents) state.agents[agent.id] = agent;
    // The period ends on the service's day, not this browser's: the demo's simulated clock runs
    // ahead of the wall clock (a list without from/to answers with the PBX's last 7 days).
    const clock = await api("GET", "/api/v1/recordings", undefined, { quiet: true }).catch(() => null);
    if (clock && /^\d{4}-\d{2}-\d{2}/.test(clock.to || "")) {
      const end = new Date(clock.to.slice(0, 10) + "T12:00:00");
      $("#to").value = isoDay(end);
      $("#from").value = isoDay(new Date(end.getTime() - 6 * 86400000));
    }
    $("#f-queue").append(...queues.queues.map((q) => el("option", { value: q.id, text: q.name })));
    $("#f-agent").append(...agents.agents.slice().sort((a, b) => a.name.localeCompare(b.name))
      .map((a) => el("option", { value: a.id, text: a.name })));
    await refresh();
  }

  async function refresh() {
    setText($("#period-hint"), "loading…");
    await Promise.all([loadSummary(), loadProposals(), loadRecordings(), loadCalibration()]).catch(() => {});
    setText($("#period-hint"), `as of ${new Date().toLocaleTimeString("en-GB", { hourCycle: "h23" })}`);
  }

  $("#period").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });

  // --- figures --------------------------------------------------------------------------------

  async function loadSummary() {
    state.summary = await api("GET", "/api/v1/quality/summary?" + period());
    renderFigures();
  }

  for (const tab of document.querySelectorAll(".figure-tabs .tab")) {
    tab.addEventListener("click", () => {
      state.by = tab.dataset.by;
      for (const other of document.querySelectorAll(".figure-tabs .tab")) {
        other.classList.toggle("active", other === tab);
        other.setAttribute("aria-selected", String(other === tab));
      }
      renderFigures();
    });
  }

  function figureRow(key, label, sub, figures) {
    const fcr = state.by === "queues" ? percent(figures.fcr_rate) : "—";
    return el("tr", { dataset: { key } },
      el("td", { class: "name" }, label, sub ? el("span", { class: "id", text: sub }) : null),
      el("td", { class: "n quality " + scoreClass(figures.quality_score), text: scoreText(figures.quality_score) }),
      el("td", { class: "n evaluations" + (figures.evaluations ? "" : " zero"), text: figures.evaluations || 0 }),
      el("td", { class: "n", text: figures.answered ?? "—" }),
      el("td", { class: "n", text: figures.aht_s === null || figures.aht_s === undefined ? "—" : duration(figures.aht_s) }),
      el("td", { class: "n", text: fcr }),
      el("td", { class: "n", text: figures.csat_avg === null || figures.csat_avg === undefined ? "—"
                                                                                              : figures.csat_avg.toFixed(2) }));
  }

  function renderFigures() {
    const summary = state.summary;
    const tbody = $("#figures tbody");
    const labels = { queues: "Queue", teams: "Team", agents: "Agent" };
    setText($("#figures-what"), labels[state.by]);
    if (!summary) return;
    const rows = Object.entries(summary[state.by] || {});
    if (!rows.length) {
      placeholder(tbody, 7, "No figures for this period");
    } else {
      tbody.replaceChildren(...rows.map(([key, figures]) => {
        if (state.by === "queues") return figureRow(key, figures.name || key, null, figures);
        if (state.by === "agents") return figureRow(key, figures.name || key, figures.team ? "team " + figures.team : null,
                                                    figures);
        return figureRow(key, key, null, figures);
      }));
    }
    const foot = $("#figures tfoot");
    foot.replaceChildren(summary.total ? figureRow("total", "All", null, summary.total) : "");
  }

  // --- proposals ---------------------------------------------------------------------------------

  async function loadProposals() {
    const to = new Date($("#to").value + "T12:00:00");
    const monday = new Date(to.getTime() - ((to.getDay() + 6) % 7) * 86400000);
    const body = await api("GET", "/api/v1/quality/proposals?week=" + isoDay(monday));
    setText($("#week"), `week of ${new Date(body.week + "T12:00:00").toLocaleDateString("en-GB",
      { weekday: "short", day: "numeric", month: "short" })}`);
    const box = $("#proposals");
    const agents = Object.entries(body.agents);
    if (!agents.length) {
      box.replaceChildren(el("div", { class: "empty", text: "Every recorded call of the week is evaluated." }));
      return;
    }
    box.replaceChildren(...agents.map(([agent, calls]) => el("div", { class: "proposal", dataset: { agent } },
      el("div", { class: "who-agent", text: agentName(agent) }),
      el("div", { class: "calls" }, ...calls.map((call) => el("button", {
        type: "button", class: "call-chip " + call.reason, dataset: { call: call.call_id },
        title: `${queueName(call.queue)} · ${when(call.connected_at)} · talk ${duration(call.talk_s)}`,
        onclick: () => openCall(call.call_id),
      }, el("span", { class: "reason", text: REASONS[call.reason] || call.reason }),
      el("span", { class: "when", text: when(call.connected_at) })))))));
  }

  // --- recorded calls ------------------------------------------------------------------------------

  async function loadRecordings() {
    const params = period();
    if ($("#f-queue").value) params.set("queue", $("#f-queue").value);
    if ($("#f-agent").value) params.set("agent", $("#f-agent").value);
    const body = await api("GET", "/api/v1/recordings?" + params);
    const tbody = $("#recordings tbody");
    setText($("#recording-count"), body.recordings.length);
    if (!body.recordings.length) {
      placeholder(tbody, 8, "No recorded calls in this period");
      return;
    }
    tbody.replaceChildren(...body.recordings.map((call) => el("tr", {
      dataset: { call: call.call_id }, class: state.call === call.call_id ? "selected" : null },
      el("td", { text: when(call.connected_at) }),
      el("td", { text: queueName(call.queue) }),
      el("td", { class: "name", text: agentName(call.agent) }),
      el("td", { text: call.caller || "withheld" }),
      el("td", { class: "n", text: duration(call.talk_s) }),
      el("td", { class: "n", text: duration(call.duration_s) }),
      el("td", { class: "n" + (call.evaluations ? "" : " zero"), text: call.evaluations }),
      el("td", { class: "actions" }, el("button", { type: "button", class: "small", dataset: { open: call.call_id },
                                                   text: "Open", onclick: () => openCall(call.call_id) })))));
  }

  // --- one call: recording, IVR path, timeline, scorecard ---------------------------------------

  async function openCall(callId) {
    state.call = callId;
    const panel = $("#panel-call");
    panel.hidden = false;
    panel.dataset.call = callId;
    for (const row of document.querySelectorAll("#recordings tr[data-call]")) {
      row.classList.toggle("selected", row.dataset.call === callId);
    }
    setText($("#eval-result"), "");
    $("#eval-result").className = "eval-result";
    $("#comments").value = "";
    const player = $("#player");
    player.src = `/api/v1/recordings/${encodeURIComponent(callId)}/audio`;
    player.load();
    setText($("#player-info"), "");
    const timeline = await api("GET", `/api/v1/calls/${encodeURIComponent(callId)}/timeline`);
    setText($("#call-title"), `Call ${callId}`);
    setText($("#call-meta"), `${queueName(timeline.queue)} · ${agentName(timeline.agent)}`);
    renderTimeline(timeline);
    await Promise.all([loadCard(timeline.queue), loadCallEvaluations(callId)]);
    panel.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  $("#call-close").addEventListener("click", () => {
    $("#panel-call").hidden = true;
    $("#player").pause();
    state.call = null;
  });

  $("#player").addEventListener("loadedmetadata", (event) => {
    const audio = event.currentTarget;
    setText($("#player-info"), `recording ${duration(audio.duration)}`);
  });
  $("#player").addEventListener("error", () => {
    if (state.call) setText($("#player-info"), "the recording cannot be played (missing or not served)");
  });

  function details(event) {
    const data = event.data || {};
    const skip = new Set(["team", "flow"]);
    return Object.entries(data).filter(([key]) => !skip.has(key))
      .map(([key, value]) => `${key.replace(/_/g, " ")}: ${typeof value === "object" ? JSON.stringify(value) : value}`)
      .join(" · ");
  }

  function renderTimeline(timeline) {
    const path = $("#ivr-path");
    const steps = timeline.ivr_path.filter((step) => step.type !== "ivr.ended");
    if (!steps.length) {
      path.replaceChildren(el("li", { class: "none", text: "no IVR before the queue" }));
    } else {
      path.replaceChildren(...steps.map((step) => el("li", { class: step.type === "ivr.input" ? "input" : "node" },
        step.type === "ivr.input" ? `keyed ${step.input}` : `${step.flow}/${step.node}`)));
    }
    const rec = timeline.recording;
    if (rec) setText($("#player-info"), `${rec.file} · ${duration(rec.duration_s)} · kept ${rec.retention_days} days`);
    $("#timeline tbody").replaceChildren(...timeline.events.map((event) => el("tr", { class: event.type.replace(".", "-") },
      el("td", { class: "n", text: when(event.ts) }),
      el("td", { class: "type", text: event.type }),
      el("td", { text: event.queue || "" }),
      el("td", { text: event.agent || "" }),
      el("td", { class: "details", text: details(event) }))));
  }

  async function loadCard(queue) {
    const sections = $("#card-sections");
    state.card = null;
    try {
      state.card = await api("GET", `/api/v1/scorecards/for/${encodeURIComponent(queue)}`, undefined, { quiet: true });
    } catch (err) {
      setText($("#card-title"), "No scorecard");
      sections.replaceChildren(el("p", { class: "muted", text: `No scorecard is assigned to ${queueName(queue)}.` }));
      $("#submit-evaluation").disabled = true;
      return;
    }
    $("#submit-evaluation").disabled = false;
    const card = state.card;
    $("#card-title").replaceChildren(card.title, el("span", { class: "version", text: `version ${String(card.version).slice(0, 8)}` }));
    const label = (choice) => (choice === "na" ? "n.a." : String(choice));
    const choice = (question, value) => el("label", { class: "choice" },
      el("input", { type: "radio", name: "q-" + question.id, value: String(value) }),
      el("span", { text: label(value) }));
    const row = (question) => el("div", { class: "question" + (question.critical ? " critical" : ""),
                                          dataset: { question: question.id } },
      el("div", { class: "text" }, question.text,
        question.critical ? el("span", { class: "crit", title: "A “no” makes the whole score 0", text: "critical" }) : null),
      el("div", { class: "choices", role: "radiogroup", "aria-label": question.text },
        ...question.choices.map((value) => choice(question, value))));
    sections.replaceChildren(...card.sections.map((section) => el("fieldset", { class: "section",
                                                                                dataset: { section: section.id } },
      el("legend", { text: section.title }, el("span", { class: "weight", text: ` ×${section.weight}` })),
      ...section.questions.map(row))));
  }

  async function loadCallEvaluations(callId) {
    const body = await api("GET", `/api/v1/evaluations?call_id=${encodeURIComponent(callId)}`);
    const list = $("#call-evaluations");
    if (!body.evaluations.length) {
      list.replaceChildren(el("li", { class: "none", text: "Not evaluated yet." }));
      return;
    }
    list.replaceChildren(...body.evaluations.map((e) => el("li", { dataset: { evaluation: e.evaluation_id } },
      el("span", { class: "score " + scoreClass(e.score), text: scoreText(e.score) }),
      el("span", { text: ` by ${e.evaluator} · ${when(e.ts)}` }),
      e.critical_failed ? el("span", { class: "crit", text: "critical failed" }) : null,
      el("span", { class: "ack" + (e.acknowledged ? " yes" : ""), text: e.acknowledged ? "acknowledged" : "not acknowledged" }),
      e.comments ? el("div", { class: "comment", text: e.comments }) : null)));
  }

  $("#scorecard").addEventListener("submit", async (event) => {
    event.preventDefault();
    const card = state.card;
    if (!card || !state.call) return;
    const answers = {};
    for (const section of card.sections) {
      for (const question of section.questions) {
        const picked = document.querySelector(`input[name="q-${CSS.escape(question.id)}"]:checked`);
        const row = document.querySelector(`.question[data-question="${CSS.escape(question.id)}"]`);
        if (row) row.classList.toggle("missing", !picked);
        if (picked) answers[question.id] = question.kind === "scale" && picked.value !== "na" ? Number(picked.value) : picked.value;
      }
    }
    const button = $("#submit-evaluation");
    button.disabled = true;
    const result = $("#eval-result");
    try {
      const done = await api("POST", "/api/v1/evaluations", {
        call_id: state.call, scorecard: card.id, answers, comments: $("#comments").value });
      result.className = "eval-result " + scoreClass(done.score);
      setText(result, `Score ${scoreText(done.score)} / 100${done.critical_failed ? " (a critical question failed)" : ""}`);
      toast(`Evaluation recorded: ${scoreText(done.score)}`, "ok");
      await Promise.all([loadSummary(), loadCallEvaluations(state.call), loadRecordings(), loadCalibration(),
                         loadProposals()]);
    } catch (err) {
      result.className = "eval-result error";
      setText(result, err.message || "refused");
    } finally {
      button.disabled = false;
    }
  });

  // --- calibration ------------------------------------------------------------------------------

  async function loadCalibration() {
    const body = await api("GET", "/api/v1/quality/calibration?" + period());
    const tbody = $("#calibration tbody");
    if (!body.calls.length) {
      placeholder(tbody, 4, "No call scored by two evaluators in this period");
      return;
    }
    tbody.replaceChildren(...body.calls.map((row) => el("tr", { dataset: { call: row.call_id } },
      el("td", {}, el("button", { type: "button", class: "link", text: row.call_id, onclick: () => openCall(row.call_id) })),
      el("td", { class: "name", text: agentName(row.agent) }),
      el("td", { class: "scores" }, ...Object.entries(row.scores).map(([who, value]) =>
        el("span", { class: "score " + scoreClass(value), text: `${who} ${scoreText(value)}` }))),
      el("td", { class: "n spread" + (row.spread >= 15 ? " hot" : ""), text: scoreText(row.spread) }))));
  }

  start();
})();
