"""Validated flows as immutable values: what the interpreter runs.

A `FlowSet` is every flow file of one directory, checked as a whole, with a
`version` (a hash of the files' contents) so that a call can finish on the
version it started with while a newer one takes the new calls.  A `FlowNode`
keeps its type, its typed parameters (compiled expressions included), its
outgoing edges and its source position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from router.config.model import Schedule


@dataclass(frozen=True)
class FlowNode:
    id: str
    type: str
    params: Mapping[str, Any]
    edges: tuple[tuple[str, str], ...]     # (label, target node id) in this flow
    file: str
    line: int
    col: int
    sensitive: bool = False                 # a span recordings mute (card numbers): docs/recording.md


@dataclass(frozen=True)
class Flow:
    name: str
    file: str
    start: str
    timezone: str
    nodes: Mapping[str, FlowNode]
    description: str = ""


@dataclass(frozen=True)
class FlowSet:
    directory: str
    version: str
    flows: Mapping[str, Flow]
    languages: tuple[str, ...]                       # the first is the default
    prompts: Mapping[str, Mapping[str, str]]         # prompt -> language -> text ("*": any language)
    variables: Mapping[str, Any]                     # variable -> starting value
    variable_types: Mapping[str, str]
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    files: tuple[str, ...] = ()
