"""Matcher benchmark: the compiled matcher against the pure-Python reference.

    python benchmarks/matcher.py [--json] [--sizes 100,1000,10000] [--seed N]

For each size N it builds the same centre in both implementations: N agents over
50 skills (5 languages, 45 product skills of Zipf-like popularity; 3-8 skills
per agent, proficiency 1-10), about 30% of them available, and 500 waiting calls
with 1-2 requirement sets of 1-3 skills (a language plus popular products, low
minimums), so a typical call fits a good share of the agents.  It then runs one
sequence of decisions, alternating pick_agent (a random waiting call, a random
strategy of the six) and pick_call (a random agent), timed with
time.perf_counter_ns around batches of 100.  The figure per implementation is
the median over batches of the time per decision, Python call included.  The
reference runs a shorter prefix of the sequence at large sizes; the script
checks that both implementations return the same slot for every decision of
that prefix, so the ratio compares equal work.

--json prints one JSON object: {"sizes": {"N": {"compiled_us", "reference_us",
"speedup"}}, "skills": 50, "waiting_calls": 500}.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

try:
    import router  # noqa: F401  (installed package, or PYTHONPATH)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.engine import matcher_ref

N_SKILLS = 50
N_LANGUAGES = 5
WAITING_CALLS = 500
N_QUEUES = 5
AVAILABLE_SHARE = 0.3
NOW = 1000.0
BATCH = 100                      # decisions per timed batch (even: half of each kind)
COMPILED_DECISIONS = 4000
COMPILED_PASSES = 3
REFERENCE_DECISIONS = {100: 4000, 1000: 2000}   # larger sizes: REFERENCE_DECISIONS_LARGE
REFERENCE_DECISIONS_LARGE = 400

LANGUAGE_WEIGHTS = [0.55, 0.2, 0.12, 0.08, 0.05]
PRODUCT_SKILLS = list(range(N_LANGUAGES, N_SKILLS))
PRODUCT_WEIGHTS = [1.0 / rank for rank in range(1, len(PRODUCT_SKILLS) + 1)]


def _weighted_sample(rng: random.Random, population: list[int], weights: list[float], k: int) -> list[int]:
    """k distinct items, each drawn with probability proportional to its weight."""
    chosen: list[int] = []
    pool, pool_weights = list(population), list(weights)
    for _ in range(min(k, len(pool))):
        index = rng.choices(range(len(pool)), pool_weights)[0]
        chosen.append(pool.pop(index))
        pool_weights.pop(index)
    return chosen


def centre_operations(n_agents: int, rng: random.Random) -> list[tuple[str, tuple]]:
    """The Matcher calls that build the benchmark centre."""
    operations: list[tuple[str, tuple]] = []
    for slot in range(n_agents):
        languages = _weighted_sample(rng, list(range(N_LANGUAGES)), LANGUAGE_WEIGHTS,
                                     2 if rng.random() < 0.3 else 1)
        products = _weighted_sample(rng, PRODUCT_SKILLS, PRODUCT_WEIGHTS,
                                    rng.randint(3, 8) - len(languages))
        skills = [(skill, rng.randint(1, 10)) for skill in languages + products]
        operations.append(("set_agent", (slot, skills)))
        operations.append(("set_agent_counters", (slot, rng.randint(0, 40), rng.random())))
        operations.append(("set_agent_available",
                           (slot, rng.random() < AVAILABLE_SHARE, rng.uniform(0.0, NOW))))
    for slot in range(WAITING_CALLS):
        requirement_sets = []
        for _ in range(rng.randint(1, 2)):
            language = rng.choices(range(N_LANGUAGES), LANGUAGE_WEIGHTS)[0]
            products = _weighted_sample(rng, PRODUCT_SKILLS, PRODUCT_WEIGHTS, rng.randint(0, 2))
            requirement_sets.append([(language, rng.randint(1, 3))]
                                    + [(product, rng.randint(1, 5)) for product in products])
        operations.append(("add_call", (slot, rng.randrange(N_QUEUES), rng.choice([0, 0, 0, 1]),
                                        rng.uniform(0.0, NOW), slot, rng.choice([1.0, 1.0, 1.5, 2.0]),
                                        requirement_sets)))
    return operations


def decision_sequence(n_agents: int, n_decisions: int, rng: random.Random) -> list[tuple[bool, int, int]]:
    """(is_pick_agent, slot, strategy) alternating pick_agent and pick_call."""
    return [(True, rng.randrange(WAITING_CALLS), rng.randrange(6)) if i % 2 == 0
            else (False, rng.randrange(n_agents), 0)
            for i in range(n_decisions)]


def build(matcher_class, n_agents: int, operations, seed: int):
    matcher = matcher_class(N_SKILLS, n_agents, WAITING_CALLS, N_QUEUES, seed)
    for name, args in operations:
        getattr(matcher, name)(*args)
    return matcher


def run(matcher, decisions, passes: int) -> tuple[list[int], list[float]]:
    """Results of the first pass and the time per decision (ns) of every batch."""
    pick_agent, pick_call = matcher.pick_agent, matcher.pick_call
    first_results: list[int] = []
    per_decision_ns: list[float] = []
    for pass_number in range(passes):
        for start in range(0, len(decisions), BATCH):
            batch = decisions[start:start + BATCH]
            results = []
            begin = time.perf_counter_ns()
            for is_pick_agent, slot, strategy in batch:
                results.append(pick_agent(slot, strategy, NOW) if is_pick_agent else pick_call(slot, NOW))
            per_decision_ns.append((time.perf_counter_ns() - begin) / len(batch))
            if pass_number == 0:
                first_results.extend(results)
    return first_results, per_decision_ns


def measure(compiled_module, n_agents: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed * 1_000_003 + n_agents)
    operations = centre_operations(n_agents, rng)
    decisions = decision_sequence(n_agents, COMPILED_DECISIONS, rng)
    n_reference = REFERENCE_DECISIONS.get(n_agents, REFERENCE_DECISIONS_LARGE)

    compiled = build(compiled_module.Matcher, n_agents, operations, seed)
    eligible_share = statistics.fmean(compiled.count_eligible_agents(call, False)
                                      for call in range(WAITING_CALLS)) / n_agents
    compiled_results, compiled_ns = run(compiled, decisions, COMPILED_PASSES)
    reference = build(matcher_ref.Matcher, n_agents, operations, seed)
    reference_results, reference_ns = run(reference, decisions[:n_reference], 1)
    if reference_results != compiled_results[:n_reference]:
        first = next(i for i, (a, b) in enumerate(zip(reference_results, compiled_results)) if a != b)
        raise SystemExit(f"matcher benchmark: implementations disagree at N={n_agents}, "
                         f"decision {first}: {decisions[first]} -> compiled "
                         f"{compiled_results[first]}, reference {reference_results[first]}")
    compiled_us = statistics.median(compiled_ns) / 1000
    reference_us = statistics.median(reference_ns) / 1000
    return {"compiled_us": round(compiled_us, 3), "reference_us": round(reference_us, 3),
            "speedup": round(reference_us / compiled_us, 1),
            "eligible_share": eligible_share, "picked": sum(r >= 0 for r in reference_results),
            "checked": n_reference}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sizes", default="100,1000,10000", help="agent counts, comma-separated")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    try:
        from router.engine import cmatcher
    except ImportError as exc:
        raise SystemExit(f"matcher benchmark: the compiled matcher does not import ({exc}); "
                         "build it with `python setup.py build_ext --inplace`") from exc

    figures = {size: measure(cmatcher, size, args.seed) for size in sizes}
    if args.json:
        print(json.dumps({
            "sizes": {str(size): {key: f[key] for key in ("compiled_us", "reference_us", "speedup")}
                      for size, f in figures.items()},
            "skills": N_SKILLS, "waiting_calls": WAITING_CALLS}))
        return 0
    print(f"matcher: {N_SKILLS} skills, {WAITING_CALLS} waiting calls, "
          f"{AVAILABLE_SHARE:.0%} of agents available; median time per decision "
          "(pick_agent / pick_call alternating)")
    print(f"{'agents':>8} {'eligible':>9} {'compiled':>11} {'reference':>11} {'speedup':>8}  checked")
    for size, f in figures.items():
        print(f"{size:>8} {f['eligible_share']:>9.1%} {f['compiled_us']:>9.2f}us "
              f"{f['reference_us']:>9.1f}us {f['speedup']:>7.0f}x  "
              f"{f['checked']} decisions identical ({f['picked']} found a match)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
