"""`acd-router flows graph`: a flow as a Mermaid or Graphviz (DOT) diagram for review.

Each node is drawn with its id and type (plus the queue, schedule, flow or
target it names); each edge carries its label: the menu key, the condition,
the share of a split, or the field it comes from (next, fallback, open ...).
"""
from __future__ import annotations

from router.ivr.model import Flow, FlowNode

FORMATS = ("mermaid", "dot")
_DETAIL = ("queue", "schedule", "flow", "target", "box", "language", "question")


def render(flow: Flow, format: str = "mermaid") -> str:
    """The diagram of `flow` in `format` (mermaid or dot)."""
    if format == "mermaid":
        return _mermaid(flow)
    if format == "dot":
        return _dot(flow)
    raise ValueError(f"unknown graph format {format!r}; expected one of {', '.join(FORMATS)}")


def _label(node: FlowNode) -> str:
    details = [f"{key}: {node.params[key]}" for key in _DETAIL
               if key in node.params and isinstance(node.params[key], str)]
    return "\n".join([node.id, node.type, *details])


def _mermaid_text(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("\n", "<br/>").replace("|", "&#124;")


def _mermaid(flow: Flow) -> str:
    ids = {node_id: f"n{index}" for index, node_id in enumerate(flow.nodes)}
    lines = [f"%% flow {flow.name} ({flow.file})", "flowchart TD"]
    for node_id, node in flow.nodes.items():
        shape = ('(["', '"])') if node.type in ("queue", "callback", "transfer", "voicemail", "hangup",
                                               "return") else ('{"', '"}') if node.type in (
            "menu", "branch", "hours", "distribute") else ('["', '"]')
        lines.append(f"    {ids[node_id]}{shape[0]}{_mermaid_text(_label(node))}{shape[1]}")
    lines.append(f"    start((start)) --> {ids[flow.start]}")
    for node_id, node in flow.nodes.items():
        for label, target in node.edges:
            lines.append(f'    {ids[node_id]} -->|"{_mermaid_text(label)}"| {ids[target]}')
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _dot(flow: Flow) -> str:
    lines = [f'digraph "{_dot_text(flow.name)}" {{', "    rankdir=TB;", '    node [shape=box, fontname="sans-serif"];',
             '    "__start" [shape=circle, label="start"];']
    for node_id, node in flow.nodes.items():
        shape = "ellipse" if node.type in ("queue", "callback", "transfer", "voicemail", "hangup", "return") \
            else "diamond" if node.type in ("menu", "branch", "hours", "distribute") else "box"
        lines.append(f'    "{_dot_text(node_id)}" [shape={shape}, label="{_dot_text(_label(node))}"];')
    lines.append(f'    "__start" -> "{_dot_text(flow.start)}";')
    for node_id, node in flow.nodes.items():
        for label, target in node.edges:
            lines.append(f'    "{_dot_text(node_id)}" -> "{_dot_text(target)}" [label="{_dot_text(label)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
