"""Load and check a directory of flow files into a `FlowSet`.

Theory of operation
-------------------
Each file is parsed by `router.yamlsrc` (which refuses hostile YAML: alias
bombs, deep nesting, huge files, binary junk, duplicate keys) into positioned
nodes.  Checking happens in three passes over the whole directory, so that
references across files work and one run reports every problem:

1. collect: flow names, node ids, languages, prompts and variable
   declarations of every file (a file may hold a flow, a prompt catalogue, or
   both);
2. nodes: read every node through the field table of `router.ivr.schema`
   (unknown keys with did-you-mean, wrong types, ranges), resolve references
   (nodes, flows, queues, schedules, prompts, languages, variables) and compile
   expressions, whose errors point at the column inside the expression;
3. graph: unreachable nodes (warning), menus and collects without a fallback,
   loops with no caller input and no way out, subflows calling themselves.

Problems print as ``FILE:LINE:COL: error: MESSAGE``; a `FlowSet` comes back
only when there is no error.  Flow files are ``*.yaml`` / ``*.yml``; files
ending in ``.test.yaml`` hold test cases (router.ivr.testing) and are skipped.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from router.config.loader import ConfigReader as _Readers
from router.config.model import Schedule
from router.ivr.expr import ExprError, Expression, Scope, compile_expression, type_of
from router.ivr.model import Flow, FlowNode, FlowSet
from router.ivr.schema import (BOX_PATTERN, CLOCK_PATTERN, CONDITION_KEYS, CONFIRM_KEYS, FILE_KEYS, ID_PATTERN,
                               INPUT_TYPES, MENU_KEYS, NODE_TYPES, PROMPT_PATTERN, Field)
from router.yamlsrc import Mark, Node, ProblemList, describe, did_you_mean, load

BUILTINS: dict[str, str] = {
    "caller_id": "str", "dnis": "str", "language": "str", "hour": "int", "minute": "int",
    "weekday": "str", "date": "str", "time": "str",
}
MAX_FILES = 500
_FIXED_MOMENT = datetime(2000, 1, 1, tzinfo=timezone.utc)    # for evaluating constant expressions
_ID = re.compile(ID_PATTERN)
_PROMPT = re.compile(PROMPT_PATTERN)
_BOX = re.compile(BOX_PATTERN)
_CLOCK = re.compile(CLOCK_PATTERN)
_TARGET = re.compile(r"^(\+?[0-9]{2,20}|[A-Za-z]+/[A-Za-z0-9_@.+-]+)$")
_PATTERN_CHARS = re.compile(r"^[0-9*#\\d{},|?+\[\]-]{1,100}$")


def flow_files(directory: Path) -> list[Path]:
    """The flow files of a directory, in name order (test-case files excluded)."""
    return sorted(path for path in directory.iterdir()
                  if path.is_file() and path.suffix in (".yaml", ".yml") and not is_test_file(path))


def is_test_file(path: Path) -> bool:
    return path.name.endswith((".test.yaml", ".test.yml"))


def check_flows(path: str | Path, *, known_queues: Iterable[str] | None = None,
                schedules: Mapping[str, Schedule] | None = None,
                known_skills: Iterable[str] | None = None) -> tuple[FlowSet | None, ProblemList]:
    """Check a directory (all its flow files as one set) or a single file on its own.

    `known_queues`, `schedules` and `known_skills` come from the centre config;
    None skips that reference check (schedules then evaluate as always closed).
    """
    root = Path(path)
    problems = ProblemList()
    if root.is_dir():
        files = flow_files(root)
        if len(files) > MAX_FILES:
            problems.error(str(root), Mark(1, 1), f"more than {MAX_FILES} flow files")
            return None, problems
        if not files:
            problems.error(str(root), Mark(1, 1), "no flow files (*.yaml) in this directory")
            return None, problems
    else:
        files = [root]
    sources: list[tuple[str, bytes]] = []
    for file in files:
        try:
            with open(file, "rb") as stream:
                sources.append((str(file), stream.read(2 * 1024 * 1024 + 1)))
        except OSError as exc:
            problems.error(str(file), Mark(1, 1), f"cannot read file: {exc.strerror or exc}")
    flowset = check_sources(sources, problems, directory=str(root), known_queues=known_queues,
                            schedules=schedules, known_skills=known_skills)
    return flowset, problems


def check_sources(sources: list[tuple[str, bytes | str]], problems: ProblemList, *, directory: str = "",
                  known_queues: Iterable[str] | None = None, schedules: Mapping[str, Schedule] | None = None,
                  known_skills: Iterable[str] | None = None) -> FlowSet | None:
    """Check flow files already in memory (name, content) as one set."""
    digest = hashlib.sha256()
    checker = _SetChecker(problems, known_queues, schedules, known_skills)
    for name, content in sources:
        data = content.encode("utf-8") if isinstance(content, str) else content
        digest.update(name.rsplit("/", 1)[-1].encode() + b"\0" + data + b"\0")
        root = load(data, name, problems)
        if root is not None:
            checker.collect(name, root, data)
    flows = checker.check()
    if problems.errors:
        return None
    return FlowSet(directory=directory, version=digest.hexdigest()[:12], flows=flows,
                   languages=tuple(checker.languages) or ("en",), prompts=checker.prompts,
                   variables=checker.variables, variable_types=checker.types,
                   schedules=dict(schedules or {}), files=tuple(name for name, _ in sources))


@dataclass
class _FlowSource:
    name: str
    file: str
    reader: "_Reader"
    start: Node | None
    nodes: dict[str, Node]
    node_marks: dict[str, Mark]
    timezone: str
    description: str
    mark: Mark
    built: dict[str, FlowNode] = field(default_factory=dict)
    complete: bool = False          # every node built: the graph is whole


class _Reader(_Readers):
    """The config loader's typed readers, bound to one flow file."""

    def __init__(self, filename: str, problems: ProblemList, data: bytes) -> None:
        super().__init__(filename, problems, {})
        self.lines = data.decode("utf-8", "replace").splitlines()

    def expression_column(self, node: Node) -> int:
        """Column of an expression's first character (after an opening quote)."""
        line = self.lines[node.line - 1] if node.line - 1 < len(self.lines) else ""
        quoted = node.col - 1 < len(line) and line[node.col - 1] in "'\""
        return node.col + (1 if quoted else 0)


class _SetChecker:
    def __init__(self, problems: ProblemList, known_queues: Iterable[str] | None,
                 schedules: Mapping[str, Schedule] | None, known_skills: Iterable[str] | None) -> None:
        self.problems = problems
        self.queues = set(known_queues) if known_queues is not None else None
        self.skills = set(known_skills) if known_skills is not None else None
        self.schedules = schedules
        self.flow_sources: dict[str, _FlowSource] = {}
        self.languages: list[str] = []
        self.prompts: dict[str, dict[str, str]] = {}
        self.prompt_marks: list[tuple[_Reader, str, Node]] = []
        self.has_catalogue = False
        self.variables: dict[str, Any] = {}
        self.types: dict[str, str] = dict(BUILTINS)
        self.type_origin: dict[str, str] = {}
        self.readers: list[_Reader] = []

    # ---- pass 1: what exists ----------------------------------------------------------------

    def collect(self, file: str, root: Node, data: bytes) -> None:
        reader = _Reader(file, self.problems, data)
        self.readers.append(reader)
        top = reader.fields(root, "the flow file", FILE_KEYS)
        if top is None:
            return
        if "flow" not in top and "prompts" not in top and "languages" not in top:
            reader.error(root, "a flow file needs 'flow', 'start' and 'nodes' (or 'prompts' for a "
                               "prompt catalogue)")
        for item in reader.items(top.get("languages"), "'languages'"):
            language = self.identifier(reader, item, "language in 'languages'")
            if language is not None and language not in self.languages:
                self.languages.append(language)
        if "prompts" in top:
            self.collect_prompts(reader, top["prompts"])
        for name, value in reader.entries(top.get("variables"), "'variables'").items():
            self.declare(reader, root_keys(top["variables"], name), name, value)
        if "flow" in top:
            self.collect_flow(reader, root, top)
        else:
            for key in ("start", "nodes", "timezone"):
                if key in top:
                    reader.error(root.keys[key], f"{key!r} needs a 'flow' name in the same file")

    def identifier(self, reader: _Reader, node: Node, what: str) -> str | None:
        value = reader.text(node, what)
        if value is not None and not _ID.match(value):
            reader.error(node, f"{what}: {value!r} is not a valid name (letters, digits, '_' and '-', "
                               f"starting with a letter or '_')")
            return None
        return value

    def collect_prompts(self, reader: _Reader, node: Node) -> None:
        self.has_catalogue = True
        for name, text_node in reader.entries(node, "'prompts'").items():
            mark = node.keys[name]
            if not _PROMPT.match(name):
                reader.error(mark, f"prompt name {name!r} is not valid: use letters, digits, '_', '-' "
                                   f"and '/', no '..' and no leading '/'")
                continue
            if name in self.prompts:
                reader.error(mark, f"prompt {name!r} is defined twice")
                continue
            texts: dict[str, str] = {}
            if text_node.is_mapping:
                for language, text in text_node.value.items():
                    value = reader.text(text, f"text of prompt {name!r} in {language!r}")
                    if value is not None:
                        texts[language] = value
                self.prompt_marks.append((reader, name, text_node))
            else:
                value = reader.text(text_node, f"text of prompt {name!r}")
                if value is not None:
                    texts["*"] = value
            self.prompts[name] = texts

    def declare(self, reader: _Reader, mark: Mark, name: str, value_node: Node) -> None:
        if not _ID.match(name):
            reader.error(mark, f"variable name {name!r} is not valid (letters, digits, '_' and '-')")
            return
        if name in BUILTINS:
            reader.error(mark, f"variable {name!r} is built in and cannot be declared")
            return
        value = value_node.to_python()
        kind = type_of(value)
        if kind is None:
            reader.error(value_node, f"starting value of variable {name!r}: expected a number, text, "
                                     f"true/false or a list of numbers or texts, got {describe(value)}")
            return
        if name in self.variables:
            reader.error(mark, f"variable {name!r} is declared twice (also in {self.type_origin[name]})")
            return
        self.variables[name] = tuple(value) if isinstance(value, list) else value
        self.types[name] = kind
        self.type_origin[name] = f"{reader.file}:{mark.line}"

    def collect_flow(self, reader: _Reader, root: Node, top: dict[str, Node]) -> None:
        name = self.identifier(reader, top["flow"], "'flow'")
        for key in ("start", "nodes"):
            if key not in top:
                reader.error(root, f"missing required key {key!r} in flow {name or '?'!r}")
        if name is None:
            return
        if name in self.flow_sources:
            reader.error(top["flow"], f"duplicate flow {name!r} (also in {self.flow_sources[name].file})")
            return
        timezone = "UTC"
        if "timezone" in top:
            timezone = reader.timezone(top["timezone"], f"'timezone' of flow {name!r}") or "UTC"
        description = reader.text(top["description"], "'description'") or "" if "description" in top else ""
        nodes_node = top.get("nodes")
        nodes = reader.entries(nodes_node, f"'nodes' of flow {name!r}")
        marks = dict(nodes_node.keys) if nodes_node is not None and nodes_node.is_mapping else {}
        for node_id in list(nodes):
            if not _ID.match(node_id):
                reader.error(marks[node_id], f"node id {node_id!r} is not valid (letters, digits, '_' and "
                                             f"'-', starting with a letter or '_')")
                del nodes[node_id]
        if nodes_node is not None and nodes_node.is_mapping and not nodes:
            reader.error(nodes_node, f"flow {name!r} has no nodes")
        self.flow_sources[name] = _FlowSource(name, reader.file, reader, top.get("start"), nodes, marks,
                                              timezone, description, root.mark)
        for node_id, node in nodes.items():
            self.declare_outputs(reader, node)

    def declare_outputs(self, reader: _Reader, node: Node) -> None:
        """Variables that collect (text) and survey (number) nodes write."""
        if not node.is_mapping or "into" not in node.value:
            return
        kind = {"collect": "str", "survey": "int"}.get(node.value.get("type", Node(None, node.mark)).value)
        into = node.value["into"]
        if kind is None or not isinstance(into.value, str) or not _ID.match(into.value):
            return
        name = into.value
        if name in BUILTINS:
            return
        if self.types.get(name, kind) != kind:
            reader.error(into, f"'into' {name!r}: the variable holds {self.types[name]} values, "
                               f"but this node stores {'text' if kind == 'str' else 'a number'}")
            return
        if name not in self.types:
            self.types[name] = kind
            self.type_origin[name] = f"{reader.file}:{into.line}"
            self.variables[name] = "" if kind == "str" else 0

    # ---- pass 2: nodes ----------------------------------------------------------------------

    def check(self) -> dict[str, Flow]:
        for reader, name, text_node in self.prompt_marks:
            for language in text_node.value:
                if self.languages and language not in self.languages:
                    reader.error(text_node.keys[language], f"prompt {name!r}: unknown language {language!r}"
                                                           f"{did_you_mean(language, self.languages)}")
            missing = [lang for lang in self.languages if lang not in text_node.value]
            if missing:
                reader.warning(text_node, f"prompt {name!r} has no text for {', '.join(missing)}")
        flows: dict[str, Flow] = {}
        for source in self.flow_sources.values():
            before = source.reader.error_count
            for node_id, node in source.nodes.items():
                built = self.node(source, node_id, node)
                if built is not None:
                    source.built[node_id] = built
            source.complete = source.reader.error_count == before
            start = None
            if source.start is not None:
                start = source.reader.text(source.start, f"'start' of flow {source.name!r}")
                if start is not None and start not in source.nodes:
                    source.reader.error(source.start, f"'start' of flow {source.name!r}: unknown node "
                                                      f"{start!r}{did_you_mean(start, source.nodes)}")
                    start = None
            if start is not None:
                self.check_graph(source, start)
                flows[source.name] = Flow(source.name, source.file, start, source.timezone,
                                          dict(source.built), source.description)
        self.check_subflows()
        if self.flow_sources and not self.has_catalogue:
            first = next(iter(self.flow_sources.values()))
            first.reader.warning(first.mark, "no prompt catalogue ('prompts:') in this flow set: "
                                             "prompt names are not checked")
        return flows

    def node(self, source: _FlowSource, node_id: str, node: Node) -> FlowNode | None:
        reader = source.reader
        owner = f"node {node_id!r}"
        if not node.is_mapping:
            reader.error(node, f"{owner}: expected a mapping with a 'type', got {describe(node.value)}")
            return None
        if "type" not in node.value:
            reader.error(node, f"missing required key 'type' in {owner} (one of {', '.join(NODE_TYPES)})")
            return None
        kind = reader.choice(node.value["type"], f"'type' of {owner}", tuple(NODE_TYPES), "node type")
        if kind is None:
            return None
        owner = f"{kind} node {node_id!r}"
        table = NODE_TYPES[kind]
        f = reader.fields(node, owner, ("type", "description", "sensitive", *table), required=tuple(
            key for key, spec in table.items() if spec.required))
        if f is None:
            return None
        before = reader.error_count
        params: dict[str, Any] = {}
        edges: list[tuple[str, str]] = []
        for key, spec in table.items():
            if key not in f:
                if spec.default is not None and not spec.kind.startswith("expr"):
                    params[key] = spec.default
                elif spec.kind == "expr:str" and spec.default is not None:
                    params[key] = compile_expression(spec.default, self.types, self.schedules)
                continue
            value = self.field(source, f[key], spec, f"{key!r} of {owner}", edges, key)
            if value is not None:
                params[key] = value
        self.check_node_rules(source, kind, node, f, params, owner)
        sensitive = reader.flag(f["sensitive"], f"'sensitive' of {owner}") if "sensitive" in f else False
        if reader.error_count != before:
            return None
        mark = source.node_marks[node_id]
        return FlowNode(node_id, kind, params, tuple(edges), reader.file, mark.line, mark.col, bool(sensitive))

    def check_node_rules(self, source: _FlowSource, kind: str, node: Node, f: dict[str, Node],
                         params: dict[str, Any], owner: str) -> None:
        reader = source.reader
        if kind == "goto" and ("target" in f) == ("flow" in f):
            reader.error(node, f"{owner}: expected either 'target' (a node) or 'flow', not "
                               f"{'both' if 'flow' in f else 'neither'}")
        if kind == "collect" and "min_digits" in params and "max_digits" in params \
                and params["min_digits"] > params["max_digits"]:
            reader.error(f["min_digits"], f"{owner}: 'min_digits' ({params['min_digits']}) is more than "
                                          f"'max_digits' ({params['max_digits']})")
        if kind == "collect" and "confirm" in params and "confirm" in f:
            confirm = params["confirm"]
            if confirm["yes"] == confirm["no"]:
                reader.error(f["confirm"], f"'confirm' of {owner}: 'yes' and 'no' use the same key")

    def field(self, source: _FlowSource, node: Node, spec: Field, what: str,
              edges: list[tuple[str, str]], key: str) -> Any:
        reader = source.reader
        kind = spec.kind
        if kind == "node":
            target = self.node_ref(source, node, what)
            if target is not None:
                edges.append((key, target))
            return target
        if kind == "prompt":
            names = self.prompt_list(reader, node, what, single=True)
            return names[0] if names else None
        if kind == "prompts":
            return self.prompt_list(reader, node, what)
        if kind == "escalation":
            return tuple(self.prompt_list(reader, item, f"attempt {index + 1} of {what}")
                         for index, item in enumerate(reader.items(node, what)))
        if kind == "bool":
            return reader.flag(node, what)
        if kind == "int":
            return reader.integer(node, what, int(spec.lo) if spec.lo is not None else None,
                                  int(spec.hi) if spec.hi is not None else None)
        if kind == "number":
            return reader.number(node, what, spec.lo, spec.hi)
        if kind == "choice":
            return reader.choice(node, what, spec.choices, "value")
        if kind == "box":
            box = reader.text(node, what)
            if box is not None and not _BOX.match(box):
                reader.error(node, f"{what}: expected a mailbox such as 1000 or 1000@sales, got {box!r}")
                return None
            return box
        if kind == "expr:time":
            return self.clock(reader, node, what)
        if kind.startswith("expr:"):
            return self.expression(reader, node, what, None if kind == "expr:any" else kind[5:])
        if kind == "int_or_expr":
            if isinstance(node.value, int) and not isinstance(node.value, bool):
                return node.value
            return self.expression(reader, node, what, "int")
        if kind == "variable":
            name = self.identifier(reader, node, what)
            if name in BUILTINS:
                reader.error(node, f"{what}: {name!r} is built in and cannot be changed")
                return None
            return name
        if kind == "queue":
            return self.known(reader, node, what, self.queues, "queue")
        if kind == "schedule":
            return self.known(reader, node, what, self.schedules, "schedule")
        if kind == "flow":
            return self.known(reader, node, what, self.flow_sources, "flow")
        if kind == "language":
            return self.known(reader, node, what, self.languages or ["en"], "language")
        if kind == "target":
            target = reader.text(node, what)
            if target is not None and not _TARGET.match(target):
                reader.error(node, f"{what}: expected a phone number such as +441234567890 or an endpoint "
                                   f"such as PJSIP/2000, got {target!r}")
                return None
            return target
        if kind == "pattern":
            return self.pattern(reader, node, what)
        return getattr(self, f"read_{kind}")(source, node, what, edges)

    def node_ref(self, source: _FlowSource, node: Node, what: str) -> str | None:
        target = source.reader.text(node, what)
        if target is not None and target not in source.nodes:
            source.reader.error(node, f"{what}: unknown node {target!r}{did_you_mean(target, source.nodes)}")
            return None
        return target

    def known(self, reader: _Reader, node: Node, what: str, known: Any, noun: str) -> str | None:
        value = reader.text(node, what)
        if value is not None and known is not None and value not in known:
            reader.error(node, f"{what}: unknown {noun} {value!r}{did_you_mean(value, known)}")
            return None
        return value

    def prompt_list(self, reader: _Reader, node: Node, what: str, single: bool = False) -> tuple[str, ...]:
        items = [node] if single or not node.is_sequence else node.value
        if not single and node.is_sequence and not items:
            reader.error(node, f"{what}: expected at least one prompt")
        names = []
        for item in items:
            name = reader.text(item, what)
            if name is None:
                continue
            if not _PROMPT.match(name):
                reader.error(item, f"{what}: prompt name {name!r} is not valid: use letters, digits, '_', "
                                   f"'-' and '/', no '..' and no leading '/'")
            elif self.has_catalogue and name not in self.prompts:
                reader.error(item, f"{what}: unknown prompt {name!r}{did_you_mean(name, self.prompts)}")
            else:
                names.append(name)
        return tuple(names)

    def expression(self, reader: _Reader, node: Node, what: str, want: str | None,
                   allow_bool: bool = False) -> Expression | None:
        value = node.value
        if isinstance(value, bool) or (isinstance(value, int) and want in (None, "int", "bool")):
            value = str(value).lower()
        if not isinstance(value, str):
            reader.error(node, f"{what}: expected an expression (text), got {describe(node.value)}")
            return None
        try:
            compiled = compile_expression(value, self.types, self.schedules, want)
        except ExprError as exc:
            column = reader.expression_column(node) + exc.offset
            reader.error(Mark(node.line, column), f"{what}: {exc.message}")
            return None
        if want is None and compiled.type not in ("str", "int", "bool" if allow_bool else "str"):
            reader.error(node, f"{what}: expected a text or number expression")
            return None
        return compiled

    def clock(self, reader: _Reader, node: Node, what: str) -> Expression | None:
        """A local time 'HH:MM': written as such (14:30, quoted or not), or a text expression,
        checked for the format when it reads no variable."""
        written = node.text if node.text is not None else node.value
        if isinstance(written, str) and _CLOCK.match(written):
            return compile_expression(f"'{written}'", self.types, self.schedules, "str")
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            reader.error(node, f"{what}: expected a time such as 14:30 or a text expression, got a number")
            return None
        compiled = self.expression(reader, node, what, "str")
        if compiled is not None and not compiled.names and not compiled.schedules:
            value = compiled.evaluate(Scope({}, _FIXED_MOMENT, lambda *_: False, lambda *_: False))
            if value and not _CLOCK.match(value):
                reader.error(node, f"{what}: {value!r} is not a time HH:MM (00:00 to 23:59)")
                return None
        return compiled

    def pattern(self, reader: _Reader, node: Node, what: str) -> re.Pattern[str] | None:
        text = reader.text(node, what)
        if text is None:
            return None
        if not _PATTERN_CHARS.match(text):
            reader.error(node, f"{what}: a digit pattern may use digits, * # \\d [ ] - {{ }} , | ? + "
                               f"only (no groups), got {text!r}")
            return None
        try:
            return re.compile(text)
        except re.error as exc:
            column = reader.expression_column(node) + (exc.pos or 0)
            reader.error(Mark(node.line, column), f"{what}: invalid pattern: {exc.msg}")
            return None

    def read_options(self, source: _FlowSource, node: Node, what: str,
                     edges: list[tuple[str, str]]) -> dict[str, str] | None:
        options: dict[str, str] = {}
        entries = source.reader.entries(node, what)
        if node.is_mapping and not entries:
            source.reader.error(node, f"{what}: expected at least one option")
        for key, target_node in entries.items():
            if key not in MENU_KEYS:
                source.reader.error(node.keys[key], f"{what}: option key {key!r} is not a phone key "
                                                    f"(0-9, * or #; quote '*' and '#')")
                continue
            target = self.node_ref(source, target_node, f"option {key} of {what}")
            if target is not None:
                options[key] = target
                edges.append((f"key {key}", target))
        return options

    def read_assignments(self, source: _FlowSource, node: Node, what: str,
                         edges: list[tuple[str, str]]) -> dict[str, Any]:
        reader = source.reader
        values: dict[str, Any] = {}
        entries = reader.entries(node, what)
        if node.is_mapping and not entries:
            reader.error(node, f"{what}: expected at least one variable")
        for name, value_node in entries.items():
            mark = node.keys[name]
            if name in BUILTINS:
                reader.error(mark, f"{what}: {name!r} is built in and cannot be changed")
                continue
            if name not in self.types:
                reader.error(mark, f"{what}: variable {name!r} is not declared; add it under 'variables:' "
                                   f"with its starting value{did_you_mean(name, self.variables)}")
                continue
            kind = self.types[name]
            literal = value_node.to_python()
            if not isinstance(literal, str) or kind == "list":
                if type_of(literal) != kind:
                    reader.error(value_node, f"{what}: variable {name!r} holds {kind} values, "
                                             f"got {describe(literal)}")
                    continue
                values[name] = tuple(literal) if isinstance(literal, list) else literal
                continue
            compiled = self.expression(reader, value_node, f"value of {name!r} in {what}", kind)
            if compiled is not None:
                values[name] = compiled
        return values

    def read_conditions(self, source: _FlowSource, node: Node, what: str,
                        edges: list[tuple[str, str]]) -> tuple[tuple[Expression, str], ...]:
        reader = source.reader
        conditions = []
        items = reader.items(node, what)
        if node.is_sequence and not items:
            reader.error(node, f"{what}: expected at least one condition")
        for index, item in enumerate(items):
            owner = f"condition {index + 1} of {what}"
            f = reader.fields(item, owner, CONDITION_KEYS, required=CONDITION_KEYS)
            if not f or "if" not in f or "goto" not in f:
                continue
            test = self.expression(reader, f["if"], f"'if' of {owner}", "bool")
            target = self.node_ref(source, f["goto"], f"'goto' of {owner}")
            if test is not None and target is not None:
                conditions.append((test, target))
                edges.append((f"if {test.text}", target))
        return tuple(conditions)

    def read_split(self, source: _FlowSource, node: Node, what: str,
                   edges: list[tuple[str, str]]) -> tuple[tuple[str, float], ...] | None:
        reader = source.reader
        shares = []
        for target, share_node in reader.entries(node, what).items():
            share = reader.number(share_node, f"share of {target!r} in {what}", lo=0, hi=100, lo_open=True)
            resolved = self.node_ref(source, Node(target, node.keys[target]), what)
            if share is not None and resolved is not None:
                shares.append((resolved, share))
                edges.append((f"{share:g}%", resolved))
        total = sum(share for _, share in shares)
        if shares and len(shares) == len(node.value) and abs(total - 100) > 1e-9:
            reader.error(node, f"{what}: the shares add up to {total:g}, not 100")
            return None
        return tuple(shares)

    def read_skills(self, source: _FlowSource, node: Node, what: str,
                    edges: list[tuple[str, str]]) -> dict[str, int]:
        reader = source.reader
        skills = {}
        for skill, level_node in reader.entries(node, what).items():
            if self.skills is not None and skill not in self.skills:
                reader.error(node.keys[skill], f"{what}: unknown skill {skill!r}{did_you_mean(skill, self.skills)}")
                continue
            level = reader.integer(level_node, f"skill {skill!r} in {what}", 1, 10)
            if level is not None:
                skills[skill] = level
        return skills

    def read_data(self, source: _FlowSource, node: Node, what: str,
                  edges: list[tuple[str, str]]) -> dict[str, Any]:
        reader = source.reader
        data: dict[str, Any] = {}
        for key, value_node in reader.entries(node, what).items():
            value = value_node.value
            if isinstance(value, (int, bool)) or value is None:
                data[key] = value
                continue
            compiled = self.expression(reader, value_node, f"{key!r} in {what}", None, allow_bool=True)
            if compiled is not None:
                data[key] = compiled
        return data

    def read_confirm(self, source: _FlowSource, node: Node, what: str,
                     edges: list[tuple[str, str]]) -> dict[str, Any] | None:
        reader = source.reader
        f = reader.fields(node, what, CONFIRM_KEYS, required=("prompt",))
        if f is None or "prompt" not in f:
            return None
        confirm: dict[str, Any] = {"prompt": self.prompt_list(reader, f["prompt"], f"'prompt' of {what}"),
                                   "intro": (), "yes": "1", "no": "2"}
        if "intro" in f:
            confirm["intro"] = self.prompt_list(reader, f["intro"], f"'intro' of {what}")
        for key in ("yes", "no"):
            if key in f:
                confirm[key] = reader.choice(f[key], f"{key!r} of {what}", MENU_KEYS, "key")
        return confirm

    # ---- pass 3: the graph ------------------------------------------------------------------

    def check_graph(self, source: _FlowSource, start: str) -> None:
        reader, built = source.reader, source.built
        reached = {start}
        todo = [start]
        while todo:
            node = built.get(todo.pop())
            for _, target in node.edges if node else ():
                if target not in reached:
                    reached.add(target)
                    todo.append(target)
        for node_id in source.nodes if source.complete else ():
            if node_id not in reached:
                reader.warning(source.node_marks[node_id], f"node {node_id!r} of flow {source.name!r} is "
                                                           f"never reached from its start {start!r}")
        for node_id, node in built.items():
            if node.type in ("menu", "collect") and "fallback" not in node.params:
                reader.error(source.node_marks[node_id],
                             f"{node.type} node {node_id!r} has no 'fallback': after the last attempt the "
                             f"caller would be stuck; add 'fallback: NODE'")
        for component in _cycles(built):
            if any(built[n].type in INPUT_TYPES for n in component):
                continue
            leaves = any(target not in component for n in component for _, target in built[n].edges)
            if leaves:
                continue
            first = min(component, key=lambda n: (built[n].line, built[n].col))
            ring = " -> ".join(sorted(component, key=lambda n: (built[n].line, built[n].col)))
            reader.error(source.node_marks[first], f"nodes {ring} form a loop with no caller input and no "
                                                   f"way out: the call would never end")

    def check_subflows(self) -> None:
        calls: dict[str, list[tuple[FlowNode, str]]] = {}
        called: set[str] = set()
        for source in self.flow_sources.values():
            for node in source.built.values():
                if node.type in ("subflow",):
                    calls.setdefault(source.name, []).append((node, node.params["flow"]))
                    called.add(node.params["flow"])
        for source in self.flow_sources.values():
            for node in source.built.values():
                if node.type == "return" and source.name not in called:
                    source.reader.warning(Mark(node.line, node.col),
                                          f"return node {node.id!r}: flow {source.name!r} is never called "
                                          f"as a subflow, so 'return' ends the call")
        reported: set[str] = set()
        for flow, entries in calls.items():
            for node, target in entries:
                path = _call_path(calls, target, flow)
                if path is not None and node.id not in reported:
                    reported.add(node.id)
                    reader = self.flow_sources[flow].reader
                    chain = " -> ".join([flow, *path])
                    reader.error(Mark(node.line, node.col), f"subflow node {node.id!r}: flows call each other "
                                                            f"in a circle ({chain}); use 'goto' to jump instead")


def root_keys(node: Node, key: str) -> Mark:
    return node.keys.get(key, node.mark)


def _call_path(calls: dict[str, list[tuple[FlowNode, str]]], start: str, goal: str) -> list[str] | None:
    """Flows from `start` to `goal` through subflow calls, if `goal` can be reached."""
    parents: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        flow = todo.pop()
        if flow == goal:
            path = [flow]
            while parents[path[-1]] is not None:
                path.append(parents[path[-1]])  # type: ignore[arg-type]
            return list(reversed(path))
        for _, target in calls.get(flow, ()):
            if target not in parents:
                parents[target] = flow
                todo.append(target)
    return None


def _cycles(nodes: Mapping[str, FlowNode]) -> list[set[str]]:
    """Strongly connected components that contain a cycle (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter([t for _, t in nodes[root].edges if t in nodes]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter([t for _, t in nodes[child].edges if t in nodes])))
                elif child in on_stack:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[current])
            if low[current] == index[current]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == current:
                        break
                self_loop = any(t == current for _, t in nodes[current].edges)
                if len(component) > 1 or self_loop:
                    found.append(component)
    return found
