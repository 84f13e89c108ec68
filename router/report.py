"""Output formats for a KPI result (the dict of router.store.kpi.compute_kpis).

`acd-router kpi` and `acd-router simulate` print one of three forms:

- `format_kpi_table`: fixed-width text for a terminal — the queue table with a
  TOTAL row, a one-line summary of the remaining totals, the team table and,
  when the result has intervals, one row per interval (totals).
- `kpi_csv`: one CSV row per scope (total, queue, agent, team, interval, and
  per queue within an interval), pinned KPI keys as columns, then the agent-only
  columns team, talk_s, no_answers, then quality_score and evaluations (every
  scope); an interval's total row has an empty id.
- `kpi_json`: the dict itself as JSON, keys in their natural order.

Tables are described as data (a tuple of `Column`s: header, key, formatter) and
rendered by one small function; missing values (None) print as "—".
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from router.store.kpi import PINNED_KEYS, QUALITY_KEYS

MISSING = "—"
CSV_FIELDS: tuple[str, ...] = (
    "scope", "id", "interval_start", *PINNED_KEYS, "team", "talk_s", "no_answers", *QUALITY_KEYS,
)


def _count(value: Any) -> str:
    return str(int(value))


def _percent(value: Any) -> str:
    return f"{value * 100:.1f}"


def _one_decimal(value: Any) -> str:
    return f"{value:.1f}"


def _two_decimals(value: Any) -> str:
    return f"{value:.2f}"


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    key: str
    render: Callable[[Any], str]


QUEUE_COLUMNS: tuple[Column, ...] = (
    Column("Offered", "offered", _count),
    Column("Answered", "answered", _count),
    Column("Aband.", "abandoned", _count),
    Column("SL %", "service_level", _percent),
    Column("ASA s", "asa_s", _one_decimal),
    Column("AHT s", "aht_s", _one_decimal),
    Column("Aband. %", "abandonment_rate", _percent),
    Column("FCR %", "fcr_rate", _percent),
    Column("Occ. %", "occupancy", _percent),
    Column("Overflow", "overflowed", _count),
    Column("CB acc.", "callbacks_accepted", _count),
    Column("CSAT", "csat_avg", _two_decimals),
    Column("NPS", "nps", _one_decimal),
    Column("Match %", "routing_accuracy", _percent),
    Column("QA", "quality_score", _one_decimal),
)
TEAM_COLUMNS: tuple[Column, ...] = (
    Column("Agents", "agents", _count),
    Column("Answered", "answered", _count),
    Column("Talk s", "talk_s", _one_decimal),
    Column("AHT s", "aht_s", _one_decimal),
    Column("Occ. %", "occupancy", _percent),
    Column("No-ans.", "no_answers", _count),
    Column("CSAT", "csat_avg", _two_decimals),
    Column("Match %", "routing_accuracy", _percent),
    Column("QA", "quality_score", _one_decimal),
)
IVR_NODE_COLUMNS: tuple[Column, ...] = (
    Column("Entered", "entered", _count),
    Column("Hung up", "hangups", _count),
    Column("Timed out", "timeouts", _count),
)
INTERVAL_COLUMNS: tuple[Column, ...] = tuple(
    c for c in QUEUE_COLUMNS if c.key not in ("fcr_rate", "overflowed", "callbacks_accepted"))


def _cell(column: Column, figures: dict[str, Any]) -> str:
    value = figures.get(column.key)
    return MISSING if value is None else column.render(value)


def render_table(label: str, columns: tuple[Column, ...],
                 rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Fixed-width table: a left-aligned label column, then right-aligned figures."""
    grid = [[label, *(c.header for c in columns)]]
    grid += [[name, *(_cell(c, figures) for c in columns)] for name, figures in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
    lines = [
        "  ".join([line[0].ljust(widths[0]),
                   *(text.rjust(width) for text, width in zip(line[1:], widths[1:]))]).rstrip()
        for line in grid
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _minute(iso: str | None) -> str:
    return MISSING if iso is None else datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")


def format_kpi_table(kpis: dict[str, Any]) -> str:
    """Human-readable report: queues + TOTAL, summary, teams, intervals."""
    zone = kpis.get("timezone", "UTC")
    title = f"KPIs  run {kpis['run']}  {_minute(kpis['from'])} → {_minute(kpis['to'])} {zone}"
    queue_rows = [*kpis["queues"].items(), ("TOTAL", kpis)]
    summary = (
        f"Short abandons {_count(kpis['short_abandoned'])} · call-backs offered "
        f"{_count(kpis['callbacks_offered'])}, accepted {_count(kpis['callbacks_accepted'])}, "
        f"completed {_count(kpis['callbacks_completed'])}"
        + (f" (kept-place wait {_one_decimal(kpis['callback_kept_wait_s'])} s)"
           if kpis.get("callback_kept_wait_s") is not None else "")
        + " · IVR contained "
        + f"{MISSING if kpis['ivr_contained'] is None else _count(kpis['ivr_contained'])}"
    )
    if kpis.get("ivr_calls"):
        summary += (f" of {_count(kpis['ivr_calls'])} IVR calls, mean time in IVR "
                    f"{_one_decimal(kpis['ivr_time_s'])} s")
    sections = [title, render_table("Queue", QUEUE_COLUMNS, queue_rows), summary]
    drop_offs = [(node, f) for node, f in kpis.get("ivr_nodes", {}).items() if f["hangups"] or f["timeouts"]]
    if drop_offs:
        sections.append(render_table("IVR node", IVR_NODE_COLUMNS, drop_offs))
    if kpis["teams"]:
        agent_teams = [agent["team"] for agent in kpis["agents"].values()]
        team_rows = [(team, {**figures, "agents": agent_teams.count(team)})
                     for team, figures in kpis["teams"].items()]
        sections.append(render_table("Team", TEAM_COLUMNS, team_rows))
    if kpis.get("intervals"):
        interval_rows = [(_minute(i["start"]), i) for i in kpis["intervals"]]
        sections.append(render_table(f"Interval ({zone})", INTERVAL_COLUMNS, interval_rows))
    return "\n\n".join(sections) + "\n"


def kpi_csv(kpis: dict[str, Any]) -> str:
    """One CSV row per scope; columns a scope does not have stay empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, restval="", lineterminator="\n")
    writer.writeheader()

    def write(scope: str, ident: str, figures: dict[str, Any], interval_start: str = "") -> None:
        row = {key: figures[key] for key in CSV_FIELDS if key in figures}
        writer.writerow({**row, "scope": scope, "id": ident, "interval_start": interval_start})

    write("total", "", kpis)
    for queue, figures in kpis["queues"].items():
        write("queue", queue, figures)
    for agent, figures in kpis["agents"].items():
        write("agent", agent, figures)
    for team, figures in kpis["teams"].items():
        write("team", team, figures)
    for interval in kpis.get("intervals", []):
        write("interval", "", interval, interval["start"])
        for queue, figures in interval["queues"].items():
            write("interval", queue, figures, interval["start"])
    return out.getvalue()


def kpi_json(kpis: dict[str, Any]) -> str:
    """The KPI dict as indented JSON, keys in their natural order."""
    return json.dumps(kpis, indent=2, sort_keys=False, ensure_ascii=False)


CALL_TABLE: tuple[tuple[str, str], ...] = (
    ("Arrived", "arrived"), ("Queues", "queues"), ("Caller", "caller"), ("Wait s", "wait_s"),
    ("Agent", "agent"), ("Talk s", "talk_s"), ("Outcome", "outcome"), ("IVR path", "ivr_path"),
    ("CSAT", "csat"), ("NPS", "nps"),
)


def format_call_table(report: dict[str, Any]) -> str:
    """The call detail report for a terminal: one line per call, then a count."""
    grid = [[header for header, _ in CALL_TABLE]]
    for call in report["calls"]:
        cells = []
        for _, key in CALL_TABLE:
            value = call[key]
            if key == "arrived":
                value = _minute(value) + value[16:19]
            cells.append(MISSING if value in (None, "") else str(value))
        grid.append(cells)
    widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in grid]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"{len(report['calls'])} call(s), times in {report['timezone']}")
    return "\n".join(lines)


def calls_csv(report: dict[str, Any]) -> str:
    """The call detail report as CSV, one row per call."""
    from router.store.call_detail import COLUMNS

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report["calls"])
    return out.getvalue()
