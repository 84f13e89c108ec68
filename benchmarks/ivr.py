"""IVR flows: validation time of a 1,000-node flow and interpreter steps per second.

    python benchmarks/ivr.py [--json] [--nodes 1000] [--runs 7]

Generates one flow of `--nodes` nodes in repeating groups (play, set, branch,
menu, collect with a pattern), checks it as a flow file would be
(`check_sources`: YAML with positions, every field, expressions, graph) and
reports the median of `--runs` runs as `validate_ms`.  Then drives sessions
through the whole flow the way a PBX adapter would (PromptDone, menu keys,
digits) and reports nodes entered per second as `steps_per_s` (median of the
runs; each run walks the flow end to end several times).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

try:
    import router  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.events import Event
from router.ivr import Digits, FlowSession, PromptDone, check_sources
from router.yamlsrc import ProblemList

QUEUES = ("sales", "support")
NOW = datetime(2026, 11, 23, 10, tzinfo=timezone.utc)


def generated_flow(nodes: int) -> str:
    """A flow of `nodes` nodes (groups of five, a few set nodes, a queue), walked end to end by '1' and '12345'."""
    lines = ['prompts: {hello: "Hello", menu: "Press 1", again: "Again", digits: "Enter digits"}',
             "variables: {count: 0}", "flow: big", "start: n0", "nodes:"]
    groups = (nodes - 1) // 5
    fillers = nodes - 1 - groups * 5
    for group in range(groups):
        base = group * 5
        nxt = f"n{base + 5}" if group < groups - 1 else ("f0" if fillers else "end")
        lines += [
            f"  n{base}: {{type: play, prompts: hello, barge_in: true, next: n{base + 1}}}",
            f'  n{base + 1}: {{type: set, values: {{count: "count + 1"}}, next: n{base + 2}}}',
            f"  n{base + 2}:",
            "    type: branch",
            f"    conditions: [{{if: \"count >= 0 and caller_id != 'x'\", goto: n{base + 3}}}]",
            f"    else: {nxt}",
            f"  n{base + 3}:",
            "    type: menu",
            "    prompt: menu",
            f'    options: {{"1": n{base + 4}, "2": {nxt}}}',
            "    noinput: [again]",
            f"    fallback: {nxt}",
            f"  n{base + 4}:",
            "    type: collect",
            "    prompt: digits",
            "    into: entry",
            "    max_digits: 5",
            '    pattern: "[1-9][0-9]{4}"',
            f"    next: {nxt}",
            f"    fallback: {nxt}",
        ]
    for filler in range(fillers):
        after = f"f{filler + 1}" if filler < fillers - 1 else "end"
        lines.append(f'  f{filler}: {{type: set, values: {{count: "count + 1"}}, next: {after}}}')
    lines.append(f"  end: {{type: queue, queue: {QUEUES[0]}}}")
    return "\n".join(lines) + "\n"


def validate_once(text: str) -> float:
    problems = ProblemList()
    started = time.perf_counter()
    flowset = check_sources([("big.yaml", text)], problems, known_queues=QUEUES, schedules={})
    elapsed = time.perf_counter() - started
    if flowset is None:
        raise SystemExit("\n".join(map(str, problems)))
    return elapsed


def walk(flowset, call: int) -> int:
    """One call through the whole flow; returns the number of nodes entered."""
    session = FlowSession(flowset, "big", call_id=f"c{call}", caller_id="+441632960001", dnis="0800", now=NOW)
    steps = sum(1 for o in session.start() if isinstance(o, Event) and o.type == "ivr.node")
    while not session.finished:
        wait = session.expecting
        if wait == "prompt_done":
            event = PromptDone()
        else:
            event = Digits("1" if session.menu_options() else "12345")
        steps += sum(1 for o in session.handle(event) if isinstance(o, Event) and o.type == "ivr.node")
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    text = generated_flow(args.nodes)
    validate_times = [validate_once(text) for _ in range(args.runs)]
    problems = ProblemList()
    flowset = check_sources([("big.yaml", text)], problems, known_queues=QUEUES, schedules={})
    node_count = len(flowset.flows["big"].nodes)
    rates = []
    for run in range(args.runs):
        started = time.perf_counter()
        steps = sum(walk(flowset, run * 10 + call) for call in range(10))
        rates.append(steps / (time.perf_counter() - started))
    result = {"validate_ms": round(statistics.median(validate_times) * 1000, 1),
              "steps_per_s": round(statistics.median(rates)), "nodes": node_count,
              "file_bytes": len(text.encode()), "runs": args.runs}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"validate a {node_count}-node flow ({result['file_bytes']:,} bytes): "
              f"{result['validate_ms']} ms (median of {args.runs})")
        print(f"interpreter: {result['steps_per_s']:,} nodes entered per second (median of {args.runs})")


if __name__ == "__main__":
    main()
