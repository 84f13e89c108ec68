"""The sans-IO flow interpreter: every node type, escalation, read-back, subflows,
A/B determinism, events, the step budget and inputs that do not fit."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from router.config import load_config
from router.events import Event
from router.ivr import (Collect, Digits, Enqueue, FlowSession, Hangup, HungUp, InvalidInput, NoInput,
                        OfferCallback, Play, PromptDone, Say, Transfer, TransferResult, Voicemail, check_sources)
from router.ivr.session import MAX_STEPS
from router.yamlsrc import ProblemList

CENTRE = load_config(None)
MONDAY_10 = datetime(2026, 11, 23, 10, tzinfo=timezone.utc)
PROMPTS = """
languages: [en, es]
prompts: {hi: "Hi", menu: "Menu", again: "Again", louder: "Louder", wrong: "Wrong", last: "Last",
          entered: "You entered", ok: "Press 1", bye: "Bye", q: "Question", hold: "Hold"}
"""


def flowset(*flows: str):
    problems = ProblemList()
    sources = [("prompts.yaml", PROMPTS)] + [(f"f{index}.yaml", text) for index, text in enumerate(flows)]
    result = check_sources(sources, problems, known_queues=CENTRE.queues, schedules=CENTRE.schedules,
                           known_skills=CENTRE.skills)
    assert result is not None, "\n".join(map(str, problems))
    return result


def session(fs, flow="main", now=MONDAY_10, **options):
    options.setdefault("caller_id", "+441632960001")
    return FlowSession(fs, flow, call_id="c1", dnis="0800", now=now, **options)


def commands(outputs):
    return [o for o in outputs if not isinstance(o, Event)]


def events(outputs, kind=None):
    return [o for o in outputs if isinstance(o, Event) and (kind is None or o.type == kind)]


MENU = """
flow: main
start: menu
nodes:
  menu:
    type: menu
    prompt: menu
    options: {"1": one, "2": two}
    timeout_s: 4
    retries: 2
    noinput: [again, [again, louder]]
    nomatch: [wrong]
    fallback: bye
  one: {type: queue, queue: billing, priority: 3, skills: {billing: 7}, language_skill: 5, data: {n: "caller_id"}}
  two: {type: callback, queue: support, prompt: hold}
  bye: {type: hangup, message: bye}
"""


def test_menu_choice_enqueues_with_priority_skills_and_data():
    s = session(flowset(MENU))
    first = s.start()
    assert commands(first) == [Play(("menu",), True, "en"), Collect(1, 1, 4.0, 4.0, None)]
    assert s.expecting == "digits" and s.menu_options() == ("1", "2")
    out = s.handle(Digits("1"), MONDAY_10 + timedelta(seconds=3))
    assert commands(out) == [Enqueue("billing", 3, {"billing": 7, "en": 5}, {"n": "+441632960001"})]
    assert [(e.type, e.data.get("outcome")) for e in events(out)] == [
        ("ivr.input", None), ("ivr.node", None), ("ivr.ended", "queued")]
    assert events(out, "ivr.input")[0].ts == (MONDAY_10 + timedelta(seconds=3)).timestamp()
    assert s.finished and s.outcome == "queued" and s.expecting is None


def test_noinput_and_nomatch_prompts_escalate_per_count_then_fallback():
    s = session(flowset(MENU))
    s.start()
    assert commands(s.handle(NoInput()))[0].prompts == ("again", "menu")
    assert commands(s.handle(Digits("9")))[0].prompts == ("wrong", "menu")
    out = s.handle(NoInput())                    # third failure > 2 retries: fallback
    assert commands(out) == [Hangup("bye", "en")]
    assert s.outcome == "timeout"                # silence ended the call: not contained


def test_escalation_uses_the_last_entry_once_the_list_runs_out():
    s = session(flowset(MENU.replace("retries: 2", "retries: 3")))
    s.start()
    assert commands(s.handle(NoInput()))[0].prompts == ("again", "menu")
    assert commands(s.handle(NoInput()))[0].prompts == ("again", "louder", "menu")
    assert commands(s.handle(NoInput()))[0].prompts == ("again", "louder", "menu")


def test_callback_offer_and_hangup_outcomes():
    s = session(flowset(MENU))
    s.start()
    out = s.handle(Digits("2"))
    assert commands(out) == [Play(("hold",), False, "en"), OfferCallback("support", "+441632960001", {})]
    assert s.outcome == "callback"
    caller_gone = session(flowset(MENU))
    caller_gone.start()
    assert events(caller_gone.handle(HungUp()), "ivr.ended")[0].data["outcome"] == "hangup"
    assert caller_gone.handle(HungUp()) == []


COLLECT = """
flow: main
start: ask
nodes:
  ask:
    type: collect
    prompt: q
    into: account
    min_digits: 4
    max_digits: 6
    terminator: "#"
    first_digit_timeout_s: 7
    inter_digit_timeout_s: 2
    pattern: "[1-9][0-9]*"
    retries: 2
    nomatch: [wrong]
    confirm: {intro: entered, prompt: ok, yes: "1", no: "2"}
    next: read
    fallback: bye
  read: {type: say, kind: digits, value: "account", next: done}
  done: {type: queue, queue: billing, data: {account: account}}
  bye: {type: hangup}
"""


def test_collect_validates_reads_back_and_confirms():
    s = session(flowset(COLLECT))
    assert commands(s.start()) == [Play(("q",), True, "en"), Collect(6, 4, 7.0, 2.0, "#")]
    assert commands(s.handle(Digits("0123#")))[0].prompts == ("wrong", "q")          # pattern
    assert commands(s.handle(Digits("12#")))[0].prompts == ("wrong", "q")            # too short
    out = s.handle(Digits("98765#"))
    assert commands(out) == [Play(("entered",), False, "en"), Say("digits", "98765", "en"),
                             Play(("ok",), True, "en"), Collect(1, 1, 7.0, 7.0, None)]
    assert events(out, "ivr.input")[0].data == {"flow": "main", "node": "ask", "input": "digits", "length": 5}
    out = s.handle(Digits("1"))
    assert commands(out) == [Say("digits", "98765", "en")]
    out = s.handle(PromptDone())
    assert commands(out) == [Enqueue("billing", 0, {}, {"account": "98765"})]


def test_saying_no_to_the_read_back_asks_again_and_counts_as_an_attempt():
    s = session(flowset(COLLECT))
    s.start()
    s.handle(Digits("4444"))
    assert commands(s.handle(Digits("2"))) == [Play(("q",), True, "en"), Collect(6, 4, 7.0, 2.0, "#")]
    s.handle(Digits("5555"))
    s.handle(Digits("2"))
    s.handle(Digits("6666"))
    out = s.handle(NoInput())                       # silence at the read-back: third failure
    assert s.outcome == "timeout" and commands(out) == [Hangup(None, "en")]
    assert s.variables["account"] == "6666"


def test_typed_ahead_keys_answer_the_next_menu_without_its_prompt():
    fs = flowset("""
flow: main
start: hi
nodes:
  hi: {type: play, prompts: hi, barge_in: true, next: menu}
  menu: {type: menu, prompt: menu, options: {"1": q}, fallback: q}
  q: {type: queue, queue: sales}
""")
    s = session(fs)
    assert s.start()[-1] == Play(("hi",), True, "en") and s.expecting == "prompt_done"
    out = s.handle(Digits("1"))
    assert [c for c in commands(out)] == [Enqueue("sales", 0, {}, {})]
    assert [e.data.get("input") for e in events(out, "ivr.input")] == ["barge_in", "digits"]


BRANCHES = """
flow: main
start: lang
timezone: Europe/London
variables: {vips: ["+447700900001"], priority: 0, visits: 0}
nodes:
  lang: {type: language, language: es, next: count}
  count: {type: set, values: {visits: "visits + 1", priority: 2}, next: vip}
  vip:
    type: branch
    conditions:
      - {if: "caller_id in vips", goto: gold}
      - {if: "hour >= 20 or weekday == 'sun' or not open('office')", goto: shut}
    else: hours
  hours: {type: hours, schedule: office, open: standard, closed: shut, holiday: xmas}
  gold: {type: queue, queue: sales, priority: "priority * 1", data: {lang: language}}
  standard: {type: queue, queue: general, priority: priority, data: {lang: language, visits: visits}}
  shut: {type: voicemail, box: "1000@sales"}
  xmas: {type: transfer, target: "+441632960999", on_fail: shut}
"""


def test_set_branch_language_hours_and_time_variables():
    with pytest.raises(AssertionError, match="unexpected"):
        flowset(BRANCHES)                                           # '*' is not in the language
    fs = flowset(BRANCHES.replace('"priority * 1"', '"priority + 5"'))
    s = session(fs)
    assert commands(s.start()) == [Enqueue("general", 2, {}, {"lang": "es", "visits": 1})]
    vip = session(fs, caller_id="+447700900001")
    assert commands(vip.start()) == [Enqueue("sales", 7, {}, {"lang": "es"})]
    late = session(fs, now=datetime(2026, 11, 23, 20, 30, tzinfo=timezone.utc))
    assert commands(late.start()) == [Voicemail("1000@sales")] and late.outcome == "completed"


def test_holiday_transfer_and_its_failure_path():
    fs = flowset(BRANCHES.replace('"priority * 1"', "priority").replace(
        "not open('office')", "false"))
    christmas = datetime(2026, 12, 25, 11, tzinfo=timezone.utc)
    s = session(fs, now=christmas)
    assert commands(s.start()) == [Transfer("+441632960999")] and s.expecting == "transfer_result"
    out = s.handle(TransferResult(False))
    assert commands(out) == [Voicemail("1000@sales")]
    ok = session(fs, now=christmas)
    ok.start()
    assert events(ok.handle(TransferResult(True)), "ivr.ended")[0].data["outcome"] == "transferred"


SUBFLOWS = ["""
flow: main
start: hi
nodes:
  hi: {type: play, prompts: hi, next: call}
  call: {type: subflow, flow: account, next: after}
  after:
    type: branch
    conditions: [{if: "account == ''", goto: bye}]
    else: jump
  jump: {type: goto, flow: tail}
  bye: {type: hangup, message: bye}
""", """
flow: account
start: ask
nodes:
  ask: {type: collect, prompt: q, into: account, max_digits: 4, retries: 0, next: done, fallback: done}
  done: {type: return}
""", """
flow: tail
start: t
nodes:
  t: {type: goto, target: q}
  q: {type: queue, queue: support}
"""]


def test_subflow_call_return_and_goto_another_flow():
    s = session(flowset(*SUBFLOWS))
    s.start()
    out = s.handle(PromptDone())
    assert [(e.data["flow"], e.data["node"]) for e in events(out, "ivr.node")] == [
        ("main", "call"), ("account", "ask")]
    out = s.handle(Digits("1234"))
    assert [(e.data["flow"], e.data["node"]) for e in events(out, "ivr.node")] == [
        ("account", "done"), ("main", "after"), ("main", "jump"), ("tail", "t"), ("tail", "q")]
    assert commands(out) == [Enqueue("support", 0, {}, {})]


DISTRIBUTE = """
flow: main
start: ab
nodes:
  ab: {type: distribute, split: {a: 20, b: 80}}
  a: {type: queue, queue: sales}
  b: {type: queue, queue: general}
"""


def test_percentage_distribution_is_deterministic_for_a_seed_and_close_to_the_shares():
    fs = flowset(DISTRIBUTE)

    def route(call: int, seed: int) -> str:
        s = FlowSession(fs, "main", call_id=f"c{call}", caller_id="", dnis="", now=MONDAY_10, rng_seed=seed)
        return commands(s.start())[0].queue

    first = [route(call, 7) for call in range(2000)]
    assert first == [route(call, 7) for call in range(2000)]
    assert first != [route(call, 8) for call in range(2000)]
    share = Counter(first)["sales"] / len(first)
    assert 0.17 < share < 0.23


def test_survey_answers_become_survey_events():
    fs = flowset("""
flow: survey
start: csat
variables: {queue: "", agent: ""}
nodes:
  csat: {type: survey, question: csat, prompt: q, nomatch: [wrong], into: score, next: nps}
  nps: {type: survey, question: nps, prompt: q, retries: 0, next: end}
  end: {type: hangup, message: bye}
""")
    s = session(fs, "survey", context={"queue": "billing", "agent": "a003"})
    assert commands(s.start())[-1] == Collect(1, 1, 5.0, 3.0, "#")
    assert commands(s.handle(Digits("6")))[0].prompts == ("wrong", "q")
    out = s.handle(Digits("4"))
    answered = events(out, "survey.answered")[0]
    assert (answered.queue, answered.agent, answered.data["question"], answered.data["score"]) == (
        "billing", "a003", "csat", 4)
    assert commands(out)[-1] == Collect(2, 1, 5.0, 3.0, "#")
    out = s.handle(Digits("10#"))
    assert events(out, "survey.answered")[0].data["score"] == 10 and s.outcome == "completed"
    with pytest.raises(KeyError, match="not declared"):
        session(fs, "survey", context={"secret": 1})


def test_a_loop_without_input_ends_with_an_error_instead_of_hanging():
    fs = flowset("""
flow: main
start: a
variables: {n: 0}
nodes:
  a: {type: set, values: {n: "n + 1"}, next: b}
  b:
    type: branch
    conditions: [{if: "n < 1000000", goto: a}]
    else: q
  q: {type: queue, queue: sales}
""")
    s = session(fs)
    out = s.start()
    assert s.outcome == "error" and commands(out)[-1] == Hangup(None, "en")
    assert len(events(out, "ivr.node")) == MAX_STEPS
    assert "without waiting" in events(out, "ivr.ended")[0].data["reason"]


def test_inputs_that_do_not_fit_are_refused_and_junk_keys_are_a_wrong_entry():
    s = session(flowset(MENU))
    with pytest.raises(InvalidInput):
        s.handle(Digits("1"))
    s.start()
    with pytest.raises(InvalidInput, match="waiting for digits"):
        s.handle(PromptDone())
    with pytest.raises(ValueError, match="aware"):
        s.handle(Digits("1"), datetime(2026, 1, 1))
    out = s.handle(Digits("1; DROP TABLE events"))
    assert commands(out)[0].prompts == ("wrong", "menu")
    assert events(out, "ivr.input")[0].data["value"] == "?"


def test_a_session_started_on_a_flow_set_keeps_it():
    fs = flowset(MENU)
    s = session(fs)
    assert s.flowset is fs and len(fs.version) == 12


SLOTS = """
flow: main
start: menu
timezone: Europe/London
variables: {slot: ""}
nodes:
  menu:
    type: menu
    prompt: menu
    options: {"1": morning, "2": evening, "3": asap, "4": junk}
    fallback: bye
  morning: {type: set, values: {slot: "'09:30'"}, next: offer}
  evening: {type: set, values: {slot: "'18:00'"}, next: offer}
  asap: {type: set, values: {slot: "''"}, next: offer}
  junk: {type: set, values: {slot: "'25:00'"}, next: offer}
  offer: {type: callback, queue: support, at: "slot"}
  fixed: {type: callback, queue: support, at: 01:30}
  bye: {type: hangup}
"""


def test_callback_at_a_local_time_is_its_next_occurrence_in_the_flows_zone():
    fs = flowset(SLOTS)
    london_10_15 = datetime(2026, 11, 23, 10, 15, tzinfo=timezone.utc)      # GMT: local 10:15
    for key, expected in [("1", datetime(2026, 11, 24, 9, 30, tzinfo=timezone.utc)),   # passed: tomorrow
                          ("2", datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)),   # still ahead: today
                          ("3", None)]:
        s = session(fs, now=london_10_15)
        s.start()
        out = s.handle(Digits(key))
        [offer] = [c for c in commands(out) if isinstance(c, OfferCallback)]
        assert offer.at == expected and (offer.at is None or offer.at.utcoffset() == timedelta(0))
        ended = events(out, "ivr.ended")[0].data
        assert ended.get("at") == (expected.isoformat() if expected else None) and "at_invalid" not in ended
    summer = session(fs, now=datetime(2026, 7, 1, 7, 0, tzinfo=timezone.utc))   # BST: local 08:00
    summer.start()
    [offer] = [c for c in commands(summer.handle(Digits("1"))) if isinstance(c, OfferCallback)]
    assert offer.at == datetime(2026, 7, 1, 8, 30, tzinfo=timezone.utc)       # 09:30 BST


def test_a_value_that_is_not_a_time_gives_no_slot_and_says_so():
    s = session(flowset(SLOTS))
    s.start()
    out = s.handle(Digits("4"))
    [offer] = [c for c in commands(out) if isinstance(c, OfferCallback)]
    assert offer.at is None and events(out, "ivr.ended")[0].data["at_invalid"] == "25:00"


def test_a_time_the_spring_change_skips_is_the_moment_the_clocks_jump():
    from router.ivr.session import next_occurrence
    saturday = datetime(2026, 3, 28, 12, 0, tzinfo=timezone.utc)
    assert next_occurrence("01:30", saturday, "Europe/London") == datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)
    assert next_occurrence("7:30", saturday, "Europe/London") is None
