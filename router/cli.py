"""The `acd-router` command (also `python -m router`).

Each subcommand is a small function from parsed arguments to an exit code.
`--json` prints exactly one JSON object on stdout; everything for humans
(tables, progress bars, logs) goes to a terminal or stderr.  Configuration
problems print as `FILE:LINE:COL: error: MESSAGE` lines and exit 1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import zoneinfo
from datetime import date, datetime, time
from typing import Any, Awaitable, Callable, Sequence

import yaml

from router.config import ConfigError, check_config
from router.config.model import Centre
from router.ivr.registry import FlowError, flows_directory
from router.store.call_detail import OUTCOMES as CALL_OUTCOMES
from router.web.auth import TokenError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    from router.logging import configure_logging
    configure_logging(level="warning" if getattr(args, "json", False) else "info")
    try:
        return args.handler(args)
    except (ConfigError, FlowError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def load_config(path: str | None, changes: Sequence[str] = ()) -> Centre:
    """The centre config, with `--set PATH=VALUE` changes applied before validation; warnings go to
    stderr, errors raise ConfigError (all of them)."""
    if changes:
        from router.config.overrides import check_changed_config
        centre, problems = check_changed_config(path, changes)
    else:
        centre, problems = check_config(path)
    for warning in problems.warnings:
        print(warning, file=sys.stderr)
    if centre is None:
        raise ConfigError(problems.errors)
    return centre


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acd-router", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, run, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=run)
        return sub

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", metavar="FILE",
                         help="centre config (default: ./router.yaml, else the packaged sample centre)")
        sub.add_argument("--data-dir", metavar="DIR",
                         help="data directory of the embedded PostgreSQL (used when no DSN is configured)")

    serve = command("serve", _serve, "run the router on the Asterisk of the config's `ami:` section "
                                     "(without one: the built-in simulated PBX in real time)")
    with_config(serve)
    serve.add_argument("--speed", type=_positive, default=1.0,
                       help="demo mode only: simulated seconds per wall-clock second (default 1)")
    serve.add_argument("--seed", type=int, default=0, help="demo mode only: random seed")
    serve.add_argument("--start", type=_demo_start, metavar="HH:MM|TS",
                       help="demo mode only: start the simulated centre at this time of today, or at this "
                            "ISO time (the centre's local time unless it has an offset; default: now)")
    serve.add_argument("--login", action="append", default=[], metavar="AGENT",
                       help="log this agent in at start (repeatable; otherwise agents start logged out)")
    serve.add_argument("--drain-timeout", type=_positive, default=30.0, metavar="SECONDS",
                       help="on SIGTERM/SIGINT, how long calls in progress may go on (default 30)")
    serve.add_argument("--web-host", metavar="ADDRESS",
                       help="address of the dashboard, API and metrics (default: web.host, 127.0.0.1)")
    serve.add_argument("--web-port", type=_port, metavar="PORT",
                       help="their port (default: web.port, 8080; 0: any free port)")

    sim = command("simulate", _simulate, "simulate a day of the centre and print its KPIs")
    with_config(sim)
    span = sim.add_mutually_exclusive_group()
    span.add_argument("--hours", type=_positive, default=8.0, help="simulated hours (default 8)")
    span.add_argument("--days", type=_whole_number, metavar="N",
                      help="a history of N whole days from simulation.start's date, with its weekdays, trend, "
                           "overdispersion and holidays (for forecast)")
    sim.add_argument("--run", metavar="LABEL", help="store the events under this run label (default: sim:<uuid>)")
    sim.add_argument("--replace", action="store_true", help="with --run: delete that run's events first")
    sim.add_argument("--seed", type=int, default=0, help="random seed: same seed, same KPIs")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--no-store", action="store_true",
                     help="keep the events in memory (no database): the same KPIs, computed in Python")
    sim.add_argument("--set", dest="changes", action="append", default=[], metavar="PATH=VALUE",
                     help="change the config before it is validated (repeatable): a dotted path, list items by "
                          "id or index, a YAML value, e.g. queues.billing.wrap_up_s=30")
    sim.add_argument("--seeds", type=_whole_number, metavar="N",
                     help="seeds --seed .. --seed+N-1 in parallel processes, in memory: mean and 95%% interval "
                          "per KPI")
    sim.add_argument("--shifts", metavar="FILE",
                     help="play the shifts of FILE (a `simulation: shifts:` block, as `schedule --output` writes "
                          "it) instead of the config's")
    sim.add_argument("--compare", action="store_true",
                     help="with --set: the centre without and with the changes on the same seeds, and the "
                          "difference (paired by seed)")

    kpi = command("kpi", _kpi, "KPIs of recorded events (live traffic by default)")
    with_config(kpi)
    kpi.add_argument("--from", dest="start", type=_timestamp, metavar="TS",
                     help="ISO time, inclusive; without an offset, the centre's local time (its `timezone:`)")
    kpi.add_argument("--to", dest="end", type=_timestamp, metavar="TS",
                     help="ISO time, exclusive; without an offset, the centre's local time")
    kpi.add_argument("--interval", type=_minutes, metavar="15m|30m|60m",
                     help="also per interval, on the edges of the centre's local clock")
    kpi.add_argument("--run", default="live", help="'live' (default) or a simulation run label")
    kpi.add_argument("--calls", action="store_true",
                     help="the call detail report instead: one row per call (arrival, queues, wait, agent, talk, "
                          "outcome, caller, IVR path, survey)")
    kpi.add_argument("--outcome", choices=CALL_OUTCOMES, help="with --calls: only the calls of this outcome")
    output = kpi.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument("--csv", action="store_true", help="print CSV")

    qlog = command("queue-log", _queue_log, "our events as Asterisk's queue_log (for QueueMetrics, Wazo's "
                                            "statistics, qpanel)")
    with_config(qlog)
    qlog.add_argument("--run", default="live", help="'live' (default) or a simulation run label")
    qlog.add_argument("--from", dest="start", type=_timestamp, metavar="TS",
                      help="calls that joined from this ISO time (without an offset: the centre's local time)")
    qlog.add_argument("--to", dest="end", type=_timestamp, metavar="TS", help="... until this one, exclusive")
    qlog.add_argument("--output", metavar="FILE", help="write the lines here (default: standard output)")

    fc = command("forecast", _forecast, "offered calls per queue per interval for the next days, from the "
                                         "queue.joined history (models picked per queue by backtest)")
    with_config(fc)
    fc.add_argument("--run", default="live", help="'live' (default) or a simulation run label")
    fc.add_argument("--horizon-days", type=int, default=7, metavar="D",
                    help="local days to forecast, from the day after the last history day (default 7)")
    fc.add_argument("--plot", metavar="PNG", help="also draw history and forecast with its band into this PNG")
    fc_output = fc.add_mutually_exclusive_group()
    fc_output.add_argument("--json", action="store_true", help="print one JSON object")
    fc_output.add_argument("--csv", action="store_true", help="print CSV: one row per queue and interval")

    erl = command("erlang", _erlang, "staff needed for a service level (Erlang C; Erlang A with --patience)")
    erl.add_argument("--calls-per-hour", type=_positive, required=True)
    erl.add_argument("--aht", type=_positive, required=True, metavar="SECONDS")
    erl.add_argument("--answer-within", type=_positive, required=True, metavar="SECONDS")
    erl.add_argument("--target", type=float, default=0.8, help="service level goal, 0..1 (default 0.8)")
    erl.add_argument("--patience", type=_positive, metavar="SECONDS", help="mean caller patience (Erlang A)")
    erl.add_argument("--json", action="store_true", help="print one JSON object")

    staff = command("staff", _staff, "agents needed per queue and interval for each queue's service level "
                                     "(Erlang A on the forecast; --verify: checked and adjusted on the simulator)")
    with_config(staff)
    staff.add_argument("--run", default="live", help="history whose AHT and patience are measured "
                                                     "(and forecast without --forecast): 'live' or a run label")
    staff.add_argument("--forecast", metavar="FILE", help="forecast JSON (`forecast --json`; default: forecast "
                                                          "the run's history now)")
    staff.add_argument("--verify", action="store_true", help="run the plan through the simulator and adjust it "
                                                             "to the least staffing that meets every target")
    staff.add_argument("--seeds", type=int, default=4, metavar="N", help="with --verify: seeds per day (default 4)")
    staff.add_argument("--dedicated", action="store_true",
                       help="with --verify: the simulated agents have only their queue's skills (no multi-skill "
                            "sharing), to tell Erlang A's model error from the effect of shared agents")
    staff.add_argument("--plot", metavar="PNG", help="also draw agents and service levels per queue to this file")
    staff_output = staff.add_mutually_exclusive_group()
    staff_output.add_argument("--json", action="store_true", help="print one JSON object")
    staff_output.add_argument("--csv", action="store_true", help="print CSV")

    sched = command("schedule", _schedule, "shifts with breaks (the config's planning.shifts rules) that cover "
                                           "a staffing plan, as a simulation.shifts section (OR-Tools CP-SAT)")
    with_config(sched)
    sched.add_argument("--staff", metavar="FILE", help="the plan: JSON of `staff --json` (default: run staff now "
                                                       "on the --run history)")
    sched.add_argument("--run", default="live", help="without --staff: the history staff plans from "
                                                     "('live' or a run label)")
    sched.add_argument("--day", type=_day, metavar="YYYY-MM-DD",
                       help="the local day of the plan to schedule (default: its first that needs agents)")
    sched.add_argument("--time-limit", type=_positive, default=20.0, metavar="S",
                       help="solver time limit in seconds (default 20); the best schedule found by then is used")
    sched.add_argument("--output", metavar="FILE", help="write the YAML here (default: standard output)")
    sched.add_argument("--json", action="store_true", help="print one JSON object")

    load = command("loadtest", _loadtest, "scripted callers through a real Asterisk (the config's `ami:`), "
                                          "routed by the router in process")
    load.add_argument("--config", metavar="FILE", required=True, help="centre config with an `ami:` section")
    load.add_argument("--data-dir", metavar="DIR",
                      help="data directory of the embedded PostgreSQL (used when no DSN is configured)")
    load.add_argument("--calls", type=int, required=True, metavar="N", help="callers to place")
    load.add_argument("--cps", type=_positive, required=True, metavar="R", help="calls per second")
    load.add_argument("--talk-s", type=_positive, default=5.0, metavar="S",
                      help="simulated agents' talk time (default 5)")
    load.add_argument("--digits", default="1", metavar="D", help="keys each caller presses in the IVR (default 1)")
    load.add_argument("--did", default="5000", help="number called on [from-trunk] (default 5000)")
    load.add_argument("--json", action="store_true", help="print one JSON object")

    db = commands.add_parser("db", help="database maintenance").add_subparsers(metavar="ACTION")
    mig = db.add_parser("migrate", help="create or upgrade the event store schema")
    mig.set_defaults(handler=_db_migrate)
    with_config(mig)

    recordings = commands.add_parser("recordings", help="call recordings: prune").add_subparsers(metavar="ACTION")
    prune = recordings.add_parser("prune", help="delete recordings past their retention; record recording.pruned "
                                                "(and recording.missing for files not there)")
    prune.set_defaults(handler=_recordings_prune)
    with_config(prune)
    prune.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete and record nothing")
    prune.add_argument("--run", default="live", metavar="LABEL",
                       help="whose recordings: the run that stored them (default live; the demo's is demo)")
    prune.add_argument("--json", action="store_true", help="print one JSON object")

    flows = commands.add_parser("flows", help="IVR flows: validate, test, graph").add_subparsers(metavar="ACTION")
    validate = flows.add_parser("validate", help="check flow directories or files; exit 1 on any error")
    validate.set_defaults(handler=_flows_validate)
    validate.add_argument("paths", nargs="*", metavar="PATH", help="flow directory or file (default: the config's `flows`, else ./ivr_flows)")
    validate.add_argument("--config", metavar="FILE", help="centre config whose queues and schedules flows use")
    test = flows.add_parser("test", help="run the flow test cases (*.test.yaml); exit 1 on failure")
    test.set_defaults(handler=_flows_test)
    test.add_argument("paths", nargs="*", metavar="PATH", help="flow directory or test file (default: the config's `flows`, else ./ivr_flows)")
    test.add_argument("--config", metavar="FILE", help="centre config whose queues and schedules flows use")
    graph = flows.add_parser("graph", help="print a flow file as a diagram")
    graph.set_defaults(handler=_flows_graph)
    graph.add_argument("flow_file", metavar="FLOW_FILE")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.add_argument("--config", metavar="FILE", help="centre config whose queues and schedules flows use")
    cards = commands.add_parser("scorecards", help="QA scorecards: validate").add_subparsers(metavar="ACTION")
    check = cards.add_parser("validate", help="check scorecard directories or files; exit 1 on any error")
    check.set_defaults(handler=_scorecards_validate)
    check.add_argument("paths", nargs="*", metavar="PATH",
                       help="scorecard directory or file (default: the config's `scorecards`, else ./scorecards)")
    check.add_argument("--config", metavar="FILE", help="centre config whose queues the scorecards name")
    return parser


# --- commands -----------------------------------------------------------------------

def _serve(args: argparse.Namespace) -> int:
    centre = load_config(args.config)
    port = centre.web.port if args.web_port is None else args.web_port
    if centre.web.enabled and port != 0:
        host = args.web_host or centre.web.host
        print(f"Dashboard: http://{f'[{host}]' if ':' in host else host}:{port}/", flush=True)
    try:
        if centre.ami is None:
            from router.sim.realtime import run_demo
            print(f"{centre.source}: no `ami:` section, serving the built-in simulated PBX in real time "
                  f"(speed x{args.speed:g}; events under run 'demo'; Ctrl-C stops)", file=sys.stderr, flush=True)
            start = args.start
            if isinstance(start, time):
                zone = zoneinfo.ZoneInfo(centre.timezone)
                start = datetime.combine(datetime.now(zone).date(), start, tzinfo=zone)
            asyncio.run(run_demo(centre, data_dir=args.data_dir, speed=args.speed, seed=args.seed, start=start,
                                 web_host=args.web_host, web_port=args.web_port, on_ready=_announce(centre, args)))
            return 0
        from router.pbx.service import Service

        service = Service(centre, data_dir=args.data_dir, auto_login=args.login, drain_timeout_s=args.drain_timeout,
                          web_host=args.web_host, web_port=args.web_port, on_ready=_announce(centre, args))
        asyncio.run(service.run())
    except (ValueError, TokenError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot serve: {exc} (another router or demo on that port? --web-port chooses another)",
              file=sys.stderr)
        return 1
    return 0


def _announce(centre: Centre, args: argparse.Namespace) -> Any:
    """Once the web service listens: how to sign in (never a token itself), and the address when
    the port was chosen at random (otherwise it was the first line printed)."""
    def ready(web: Any) -> None:
        if web.token_file is not None:
            how = f"sign in with the token in {web.token_file}"
        elif len(web.tokens):
            how = "sign in with a token of web.tokens or ACD_WEB_TOKENS"
        else:
            how = "no tokens configured (web.tokens or ACD_WEB_TOKENS): sign-in is refused"
        if args.web_port == 0:
            print(f"Dashboard: {web.url}", flush=True)
        print(f"Dashboard ready: {how}", flush=True)
    return ready


def _loadtest(args: argparse.Namespace) -> int:
    from router.pbx.loadtest import run_loadtest

    centre = load_config(args.config)
    if centre.ami is None:
        print(f"{centre.source}: no `ami:` section; loadtest drives a real Asterisk over AMI "
              f"(see benchmarks/loadtest_centre.yaml for the sandbox)", file=sys.stderr)
        return 2
    if args.calls < 1:
        print("--calls must be at least 1", file=sys.stderr)
        return 2
    report = asyncio.run(run_loadtest(centre, calls=args.calls, cps=args.cps, talk_s=args.talk_s,
                                      digits=args.digits, did=args.did, data_dir=args.data_dir))
    if args.json:
        _print_json(report.as_dict())
    else:
        print(report.summary())
    return 0


def _simulate(args: argparse.Namespace) -> int:
    if args.replace and args.run is None:
        print("acd-router simulate: --replace needs --run LABEL", file=sys.stderr)
        return 2
    in_memory = args.no_store or args.seeds is not None or args.compare
    if args.compare and not args.changes:
        print("acd-router simulate: --compare needs at least one --set PATH=VALUE", file=sys.stderr)
        return 2
    if in_memory and (args.run is not None or args.days is not None):
        print("acd-router simulate: --run and --days store a run; --no-store, --seeds and --compare do not",
              file=sys.stderr)
        return 2
    if args.shifts is not None:
        try:
            args.changes.append(_shifts_change(args.shifts))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            print(f"acd-router simulate: --shifts {args.shifts}: {exc}", file=sys.stderr)
            return 1
    centre = load_config(args.config, args.changes)
    if args.seeds is not None or args.compare:
        return _what_if(centre, args)
    if in_memory:
        from router.sim.whatif import simulate_in_memory
        kpis = simulate_in_memory(centre, hours=args.hours, seed=args.seed, show_progress=not args.json)
        _print_simulation(centre, kpis, args.json)
        return 0
    from router.sim.run import simulate_day
    dsn, stop = _database(centre, args)
    try:
        kpis = asyncio.run(simulate_day(centre, dsn, hours=args.hours, days=args.days, seed=args.seed,
                                        run=args.run, replace=args.replace, show_progress=not args.json))
    except ValueError as exc:
        print(f"acd-router simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        if stop:
            stop()
    _print_simulation(centre, kpis, args.json)
    return 0


def _shifts_change(path: str) -> str:
    """`--shifts FILE` as the `--set` change it stands for (the file's `simulation.shifts`)."""
    with open(path, encoding="utf-8") as file:
        document = yaml.safe_load(file)
    shifts = document.get("simulation", {}).get("shifts") if isinstance(document, dict) else None
    if not isinstance(shifts, list):
        raise ValueError("expected a `simulation:` section with a `shifts:` list, as `acd-router schedule` writes")
    return "simulation.shifts=" + json.dumps(shifts)


def _print_simulation(centre: Centre, kpis: dict[str, Any], as_json: bool) -> None:
    from router.report import format_kpi_table

    if as_json:
        _print_json(kpis)
        return
    s = kpis["simulation"]
    span = f"{s['days']} days" if s["days"] else f"{s['hours']:g} h"
    print(f"Simulated {span} of {centre.source}: {s['calls']:,} calls, "
          f"{s['agents']} agents, seed {s['seed']} (run {s['run']})\n")
    print(format_kpi_table(kpis))


def _what_if(centre: Centre, args: argparse.Namespace) -> int:
    """`simulate --seeds N [--compare]`: KPIs over seeds, in parallel processes, in memory."""
    from router.sim.whatif import format_what_if, what_if

    baseline = load_config(args.config) if args.compare else None
    result = what_if(centre, baseline=baseline, seeds=args.seeds or 1, first_seed=args.seed, hours=args.hours,
                     changes=args.changes, show_progress=not args.json)
    if args.json:
        _print_json(result)
    else:
        print(f"{centre.source}: {format_what_if(result)}")
    return 0


def _kpi(args: argparse.Namespace) -> int:
    from router.report import calls_csv, format_call_table, format_kpi_table, kpi_csv
    from router.store.call_detail import call_detail
    from router.store.kpi import compute_kpis

    centre = load_config(args.config)

    async def compute(conn: Any) -> dict[str, Any]:
        if args.calls:
            return await call_detail(conn, run=args.run, start=args.start, end=args.end,
                                     timezone=centre.timezone, outcome=args.outcome)
        return await compute_kpis(conn, run=args.run, start=args.start, end=args.end,
                                  interval_minutes=args.interval,
                                  short_abandon_s=centre.short_abandon_s, timezone=centre.timezone)

    kpis = _read_store(centre, args, compute)
    if args.json:
        _print_json(kpis)
    elif args.calls and args.csv:
        sys.stdout.write(calls_csv(kpis))
    elif args.calls:
        print(format_call_table(kpis))
    elif args.csv:
        sys.stdout.write(kpi_csv(kpis))
    else:
        print(format_kpi_table(kpis))
    return 0


def _queue_log(args: argparse.Namespace) -> int:
    from router.store.queue_log import fetch_events, queue_log_lines

    centre = load_config(args.config)
    events = _read_store(centre, args, lambda conn: fetch_events(conn, run=args.run, start=args.start,
                                                                  end=args.end, timezone=centre.timezone))
    lines = queue_log_lines(events, centre)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            count = sum(out.write(text + "\n") > 0 for text in lines)
        print(f"{args.output}: {count} queue_log line(s)", file=sys.stderr)
    else:
        for text in lines:
            print(text)
    return 0


def _forecast(args: argparse.Namespace) -> int:
    from router.planning.forecast import ForecastError
    from router.planning.history import forecast_centre
    from router.planning.output import forecast_csv, forecast_table, plot_forecast

    if args.horizon_days < 1:
        print(f"acd-router forecast: --horizon-days must be at least 1, got {args.horizon_days}", file=sys.stderr)
        return 2
    centre = load_config(args.config)
    dsn, stop = _database(centre, args)
    try:
        forecast = asyncio.run(forecast_centre(centre, dsn, run=args.run, horizon_days=args.horizon_days,
                                               show_progress=not args.json))
    except ForecastError as exc:
        print(f"acd-router forecast: {exc}", file=sys.stderr)
        return 1
    finally:
        if stop:
            stop()
    result = forecast.as_dict()
    if args.plot:
        plot_forecast(forecast, args.plot)
    if args.json:
        _print_json(result)
    elif args.csv:
        sys.stdout.write(forecast_csv(result))
    else:
        print(forecast_table(result))
    if args.plot and not args.json:
        print(f"{args.plot}: history and forecast plotted", file=sys.stderr)
    return 0


def _staff(args: argparse.Namespace) -> int:
    from router.planning.staff_report import build_report, format_table, plot, read_inputs, to_csv

    if args.seeds < 1:
        print(f"acd-router staff: --seeds must be at least 1, got {args.seeds}", file=sys.stderr)
        return 2
    centre = load_config(args.config)
    dsn, stop = _database(centre, args)
    try:
        forecast, measured, notes = asyncio.run(read_inputs(centre, dsn, run=args.run, forecast_file=args.forecast,
                                                            show_progress=not args.json))
        report = build_report(centre, forecast, measured, notes, verify=args.verify, seeds=args.seeds,
                              dedicated=args.dedicated, show_progress=not args.json)
    except (OSError, ValueError, KeyError) as exc:
        print(f"acd-router staff: {exc!s}", file=sys.stderr)
        return 1
    finally:
        if stop:
            stop()
    if args.plot:
        plot(report, args.plot)
    if args.json:
        _print_json(report)
    elif args.csv:
        sys.stdout.write(to_csv(report))
    else:
        print(format_table(report))
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from router.planning.schedule import ScheduleError, demand_from_plan, make_roster, roster_yaml
    from router.progress import Progress

    centre = load_config(args.config)
    try:
        plan = _read_json(args.staff) if args.staff else _staff_plan(centre, args)
    except (OSError, ValueError, KeyError) as exc:
        print(f"acd-router schedule: {exc!s}", file=sys.stderr)
        return 1
    progress = Progress(args.time_limit, "scheduling") if not args.json else None

    def solved(elapsed_s: float, shortfall: int, paid_hours: float) -> None:
        if progress:
            progress.update(elapsed_s, f"best so far: shortfall {shortfall}, {paid_hours:g} paid hours")

    try:
        demand = demand_from_plan(plan, centre.timezone, args.day,
                                  default_interval=centre.simulation.interval_minutes if centre.simulation else None)
        roster = make_roster(centre, demand, time_limit_s=args.time_limit, on_solution=solved)
    except ScheduleError as exc:
        print(f"acd-router schedule: {exc}", file=sys.stderr)
        return 1
    finally:
        if progress:
            progress.close()
    text = roster_yaml(roster)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
        if not args.json:
            print(f"{args.output}: {len(roster.shifts)} shift(s), {roster.paid_hours:g} paid hours, "
                  f"{roster.status}", file=sys.stderr)
    if args.json:
        _print_json(roster.as_dict())
    elif not args.output:
        sys.stdout.write(text)
    return 0


def _staff_plan(centre: Centre, args: argparse.Namespace) -> dict[str, Any]:
    """`staff --json`'s plan (Erlang A, not verified) from the `--run` history, for `schedule` without --staff."""
    from router.planning.staff_report import build_report, read_inputs

    dsn, stop = _database(centre, args)
    try:
        forecast, measured, notes = asyncio.run(read_inputs(centre, dsn, run=args.run, forecast_file=None,
                                                            show_progress=not args.json))
        return build_report(centre, forecast, measured, notes, show_progress=not args.json)
    finally:
        if stop:
            stop()


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as source:
        return json.load(source)


def _erlang(args: argparse.Namespace) -> int:
    from router.sim.erlang import staffing

    try:
        result = staffing(args.calls_per_hour, args.aht, args.answer_within, args.target,
                          patience_s=args.patience)
    except ValueError as exc:
        print(f"acd-router erlang: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json(result)
        return 0
    model = "Erlang A" if args.patience else "Erlang C"
    print(f"{model}: {args.calls_per_hour:g} calls/h, AHT {args.aht:g} s, "
          f"{args.target:.0%} answered within {args.answer_within:g} s")
    rows = [("agents", f"{result['agents']}"), ("traffic", f"{result['traffic_erlangs']:.2f} Erlang"),
            ("service level", f"{result['service_level']:.1%}"), ("ASA", f"{result['asa_s']:.1f} s"),
            ("occupancy", f"{result['occupancy']:.1%}"), ("P(wait)", f"{result['p_wait']:.1%}")]
    if "p_abandon" in result:
        rows.append(("P(abandon)", f"{result['p_abandon']:.1%}"))
    for label, value in rows:
        print(f"  {label:<14} {value}")
    return 0


def _db_migrate(args: argparse.Namespace) -> int:
    from router.store.database import ensure_schema

    centre = load_config(args.config)
    dsn, stop = _database(centre, args)
    try:
        applied = asyncio.run(ensure_schema(dsn))
    finally:
        if stop:
            stop()
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def _recordings_prune(args: argparse.Namespace) -> int:
    from time import time as now

    from pathlib import Path

    from router.recording.prune import prune, store
    from router.sim.realtime import demo_recordings
    from router.store.database import default_data_dir

    centre = load_config(args.config)
    if args.run == "demo":          # the demo keeps its recordings under its data directory, as run_demo does
        centre = demo_recordings(centre, Path(args.data_dir) if args.data_dir else default_data_dir())

    async def run(conn: Any) -> Any:
        report = await prune(conn, centre.recording.directory, now(), dry_run=args.dry_run, run=args.run)
        await store(conn, report.events, run=args.run)
        return report

    report = _read_store(centre, args, run)
    if args.json:
        _print_json(report.as_json())
    else:
        print("\n".join(report.lines()))
    return 0


def _flows_references(args: argparse.Namespace) -> dict[str, Any]:
    centre = load_config(args.config)
    if not getattr(args, "paths", True):
        args.paths = [str(flows_directory(centre))]
    return {"known_queues": centre.queues, "schedules": centre.schedules, "known_skills": centre.skills}


def _flows_validate(args: argparse.Namespace) -> int:
    from router.ivr import check_flows

    references = _flows_references(args)
    failed = False
    for path in args.paths:
        flowset, problems = check_flows(path, **references)
        for problem in problems:
            print(problem, file=sys.stderr)
        failed = failed or flowset is None
        if flowset is not None:
            print(f"{path}: {len(flowset.flows)} flow(s) valid, version {flowset.version}", file=sys.stderr)
    return 1 if failed else 0


def _scorecards_validate(args: argparse.Namespace) -> int:
    from router.quality.scorecard import load_scorecards

    centre = load_config(args.config)
    failed = False
    for path in args.paths or [centre.scorecards or "scorecards"]:
        cards, problems = load_scorecards(path, centre.queues)
        for problem in problems:
            print(problem, file=sys.stderr)
        failed = failed or not cards
        if cards:
            versions = ", ".join(f"{card.id} {card.version}" for card in cards.values())
            print(f"{path}: {len(cards)} scorecard(s) valid ({versions})", file=sys.stderr)
    return 1 if failed else 0


def _flows_test(args: argparse.Namespace) -> int:
    from router.ivr import run_tests

    references = _flows_references(args)
    failed = False
    for path in args.paths:
        report = run_tests(path, **references)
        for problem in report.problems:
            print(problem, file=sys.stderr)
        failed = failed or report.failed > 0 or bool(report.problems.errors)
        print(f"{path}: {report.passed} passed, {report.failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _flows_graph(args: argparse.Namespace) -> int:
    from pathlib import Path

    from router.ivr import check_flows, render

    file = Path(args.flow_file)
    flowset, problems = check_flows(file.parent, **_flows_references(args))
    for problem in problems.errors:
        print(problem, file=sys.stderr)
    if flowset is None:
        return 1
    flows = [flow for flow in flowset.flows.values() if Path(flow.file).resolve() == file.resolve()]
    if not flows:
        print(f"{file}: no flow in this file", file=sys.stderr)
        return 1
    sys.stdout.write("".join(render(flow, args.format) for flow in flows))
    return 0


# --- helpers ----------------------------------------------------------------------------

def _read_store(centre: Centre, args: argparse.Namespace, query: Callable[[Any], Awaitable[Any]]) -> Any:
    """One read of the centre's store: the schema ensured, a connection for `query`, and an
    embedded server (when no DSN is configured) started and stopped around it."""
    from router.store.database import connect, ensure_schema

    dsn, stop = _database(centre, args)

    async def run() -> Any:
        await ensure_schema(dsn)
        conn = await connect(dsn)
        try:
            return await query(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    finally:
        if stop:
            stop()


def _database(centre: Centre, args: argparse.Namespace):
    from router.store.database import resolve_dsn
    return resolve_dsn(centre.database, getattr(args, "data_dir", None))


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return port


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1, got {text!r}")
    return value


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day like 2026-11-23, got {text!r}") from None


def _timestamp(text: str) -> datetime:
    """An ISO moment; a naive one stays naive: the KPIs read it in the centre's zone."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time like 2026-11-23T08:00, got {text!r}") from None


def _demo_start(text: str) -> datetime | time:
    """`HH:MM` (a time of today, resolved in the centre's zone) or an ISO moment (naive: local)."""
    clock = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if clock:
        return time(int(clock.group(1)), int(clock.group(2)))
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HH:MM or an ISO time like 2026-11-23T08:00, "
                                         f"got {text!r}") from None


def _minutes(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*(m|min|h)?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected 15m, 30m or 60m, got {text!r}")
    minutes = int(match.group(1)) * (60 if match.group(2) == "h" else 1)
    if minutes not in (15, 30, 60):
        raise argparse.ArgumentTypeError(f"interval must be 15m, 30m or 60m, got {text!r}")
    return minutes
