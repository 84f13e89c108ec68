"""Prometheus metrics (DESIGN §9): counters and the wait histogram from the event stream,
gauges read from the board at scrape time, plus process and event-loop lag.

The wait histogram's bucket edges include every queue's service-level threshold,
so SL is computable in PromQL, e.g. for a queue with `within_s: 20`:
``increase(acd_queue_wait_seconds_bucket{queue="billing",le="20.0"}[1h])
/ increase(acd_queue_calls_offered_total{queue="billing"}[1h])``.
Labels name queues and agent states only: never a call id or a caller number.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector

from router.config.model import Centre
from router.events import Event
from router.web.board import Board

STANDARD_WAIT_EDGES = (5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
LAG_EDGES = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
disable_created_metrics()        # no *_created series: Prometheus does not need them, scrapes get shorter

AGENT_STATES = ("available", "reserved", "on_call", "wrap_up", "paused", "logged_out")


class Metrics:
    def __init__(self, centre: Centre, board: Board, now: Callable[[], float],
                 spooled: Callable[[], int], link_up: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        edges = sorted({*STANDARD_WAIT_EDGES, *(q.sl_threshold_s for q in centre.queues.values())})
        self.offered = Counter("acd_queue_calls_offered", "Calls that joined the queue", ["queue"],
                               registry=self.registry)
        self.answered = Counter("acd_queue_calls_answered", "Calls answered, by the queue they were answered from",
                                ["queue"], registry=self.registry)
        self.abandoned = Counter("acd_queue_calls_abandoned", "Callers who hung up waiting or ringing",
                                 ["queue"], registry=self.registry)
        self.wait = Histogram("acd_queue_wait_seconds", "Wait of answered calls (edges include every SL threshold)",
                              ["queue"], buckets=edges, registry=self.registry)
        self.loop_lag = Histogram("acd_event_loop_lag_seconds", "How late the event loop runs a 0.1 s timer",
                                  buckets=LAG_EDGES, registry=self.registry)
        self.actions = Counter("acd_admin_actions", "Web API actions, by action and result", ["action", "result"],
                               registry=self.registry)
        for queue in centre.queues:
            for series in (self.offered, self.answered, self.abandoned, self.wait):
                series.labels(queue)
        self.registry.register(_BoardCollector(board, now, spooled, link_up))
        self._lag_task: asyncio.Task[None] | None = None
        self.lag_samples: list[float] = []            # for benchmarks: the last 10,000 lags

    def observe(self, event: Event) -> None:
        kind = event.type
        if kind == "queue.joined" and event.queue:
            self.offered.labels(event.queue).inc()
        elif kind == "call.connected" and event.queue:
            self.answered.labels(event.queue).inc()
            self.wait.labels(event.queue).observe(event.data.get("wait_s", 0.0))
        elif kind == "call.abandoned" and event.queue:
            self.abandoned.labels(event.queue).inc()
        elif kind == "admin.action":
            self.actions.labels(event.data.get("action", ""), event.data.get("result", "")).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def start(self) -> None:
        self._lag_task = asyncio.create_task(self._measure_lag(), name="router.web.loop_lag")

    async def close(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            await asyncio.gather(self._lag_task, return_exceptions=True)

    async def _measure_lag(self, period_s: float = 0.1) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(period_s)
            lag = max(0.0, time.perf_counter() - before - period_s)
            self.loop_lag.observe(lag)
            self.lag_samples.append(lag)
            if len(self.lag_samples) > 10_000:
                del self.lag_samples[:5_000]


class _BoardCollector:
    """Gauges of the live state, read when Prometheus scrapes."""

    def __init__(self, board: Board, now: Callable[[], float], spooled: Callable[[], int],
                 link_up: Callable[[], bool]) -> None:
        self.board, self.now, self.spooled, self.link_up = board, now, spooled, link_up

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        now = self.now()
        view: dict[str, Any] = self.board.view(now)
        waiting = GaugeMetricFamily("acd_queue_calls_waiting", "Calls waiting in the queue", labels=["queue"])
        oldest = GaugeMetricFamily("acd_queue_oldest_wait_seconds", "Wait of the longest-waiting caller",
                                   labels=["queue"])
        agents = GaugeMetricFamily("acd_agents", "Agents able to serve the queue, by state", labels=["queue", "state"])
        callbacks = GaugeMetricFamily("acd_callbacks_pending", "Call-backs not yet connected", labels=["queue"])
        for queue_id, queue in view["queues"].items():
            waiting.add_metric([queue_id], queue["waiting"])
            joined = queue["oldest_joined_at"]
            oldest.add_metric([queue_id], 0.0 if joined is None else max(0.0, now - joined))
            for state in AGENT_STATES:
                agents.add_metric([queue_id, state], queue["agents"].get(state, 0))
            callbacks.add_metric([queue_id], queue["callbacks_pending"])
        yield from (waiting, oldest, agents, callbacks)
        yield GaugeMetricFamily("acd_events_spooled", "Events spooled to disk while PostgreSQL is away",
                                value=self.spooled())
        yield GaugeMetricFamily("acd_router_leader", "1 while this router leads its group, 0 as a standby",
                                value=1.0 if view["meta"]["board"]["role"] == "leader" else 0.0)
        yield GaugeMetricFamily("acd_ami_up", "1 when the link to the PBX is up (the demo's simulated PBX: 1)",
                                value=1.0 if self.link_up() else 0.0)
