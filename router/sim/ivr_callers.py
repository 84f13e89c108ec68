"""How simulated callers behave in an IVR flow.

`IvrCallerModel.respond(session, outputs)` looks at what a FlowSession just
said and what it waits for, and answers with (seconds from now, next input):
listen to the prompts (or hang up part-way, with `hangup_per_prompt` per
prompt), press a menu or survey key drawn from the traffic model's `choices`
(silence for the probability left over, so the menu times out), type the
configured `digits` at a collect node and confirm the read-back.  The
Simulator schedules the answer on its virtual clock; nothing here keeps time.
"""
from __future__ import annotations

import random
from typing import Any

from router.config.model import IvrTraffic
from router.ivr.session import (Collect, Digits, FlowSession, HungUp, NoInput, Play, PromptDone, Say,
                                TransferResult)


class IvrCallerModel:
    def __init__(self, traffic: IvrTraffic, rng: random.Random) -> None:
        self.traffic, self.rng = traffic, rng

    def respond(self, session: FlowSession, outputs: list[Any]) -> tuple[float, Any] | None:
        """The caller's next input and its delay; None when the flow is over."""
        expecting = session.expecting
        if expecting is None:
            return None
        if expecting == "prompt_done":
            return self._listen(outputs)
        if expecting == "transfer_result":
            return 0.0, TransferResult(True)
        where = f"{session.flow.name}/{session.node.id}"
        collect = next((o for o in reversed(outputs) if isinstance(o, Collect)), None)
        timeout_s = collect.timeout_s if collect else 5.0
        prompts = self._prompt_seconds(outputs)
        if self._hangs_up(outputs):
            return self.rng.uniform(0.0, max(prompts, 0.1)), HungUp()
        if session.node.type == "collect":
            return self._collect(session, where, prompts, timeout_s)
        key = self._choose(self.traffic.choices.get(where, {}))
        if key is None:
            return prompts + timeout_s, NoInput()
        return prompts + self.traffic.think_s, Digits(key)

    def _listen(self, outputs: list[Any]) -> tuple[float, Any]:
        seconds = self._prompt_seconds(outputs)
        if self._hangs_up(outputs):
            return self.rng.uniform(0.0, seconds), HungUp()
        return seconds, PromptDone()

    def _collect(self, session: FlowSession, where: str, prompts: float, timeout_s: float) -> tuple[float, Any]:
        typed = self.traffic.digits.get(where)
        if not typed:
            return prompts + timeout_s, NoInput()
        confirm = session.node.params.get("confirm")
        if confirm and session.confirming:
            return prompts + self.traffic.think_s, Digits(confirm["yes"])
        terminator = session.node.params.get("terminator") or ""
        seconds = prompts + self.traffic.think_s + 0.5 * len(typed)
        return seconds, Digits(typed + (terminator if len(typed) < session.node.params.get("max_digits", 0)
                                        else ""))

    def _choose(self, shares: dict[str, float]) -> str | None:
        draw = self.rng.random()
        for key, share in shares.items():
            if draw < share:
                return key
            draw -= share
        return None

    def _prompt_seconds(self, outputs: list[Any]) -> float:
        count = sum(len(o.prompts) if isinstance(o, Play) else 1 for o in outputs if isinstance(o, (Play, Say)))
        return count * self.traffic.prompt_s

    def _hangs_up(self, outputs: list[Any]) -> bool:
        p = self.traffic.hangup_per_prompt
        if p <= 0:
            return False
        count = sum(len(o.prompts) if isinstance(o, Play) else 1 for o in outputs if isinstance(o, (Play, Say)))
        return self.rng.random() < 1.0 - (1.0 - p) ** count
