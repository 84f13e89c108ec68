"""Logging for the whole router: structlog, configured once, on stderr.

Theory of operation
-------------------
Every log line passes one small pipeline of structlog processors:

1. ``merge_contextvars`` — fields bound for the current task with
   ``structlog.contextvars.bind_contextvars(call_id=...)`` appear on every line
   logged while that call is handled, from any module;
2. ``add_log_level`` and an ISO-8601 UTC timestamp;
3. exception rendering (as data in JSON, as text on a console; never with
   local variables, which may hold secrets);
4. ``redact_secrets`` — values of keys that name a secret (secret, password,
   token, API key, authorization, credential) become ``"***"`` at any depth of
   nested dicts and lists; inside free text, the password of a URL or DSN
   (``postgresql://user:***@host/db``) and ``key: value`` / ``key=value``
   pairs such as an AMI ``Secret: ...`` line are masked;
5. a renderer: one JSON object per line (the default when the stream is not a
   terminal), or structlog's ConsoleRenderer for people.

The standard library's ``logging`` (asyncpg, panoramisk — which logs whole AMI
actions, Login secret included) is routed through the same pipeline by a
handler on the root logger, so nothing reaches the stream unredacted.

Logs go to stderr, never stdout: stdout carries the ``--json`` output of the
CLI.  ``configure_logging`` may be called again (e.g. once the CLI has parsed
its options): it replaces the configuration and its own root handler rather
than adding to them.  Loggers are therefore not cached on first use, so a
module-level ``structlog.get_logger()`` follows the latest configuration.
"""
from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

REDACTED = "***"

_SECRET_KEY = re.compile(r"secret|passw(?:or)?d|pwd|token|api[_-]?key|authori[sz]ation|credential", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)[^@/\s]+(?=@)", re.I)
_INLINE_SECRET = re.compile(
    r"(?P<head>\b[\w-]*(?:secret|passw(?:or)?d|token|api[_-]?key)[\w-]*['\"]?\s*[:=]\s*)"
    r"(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;&}\])]+)",
    re.I,
)
_HANDLER_NAME = "acd-router"


def _mask_inline(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[0] in "'\"" else ""
    return f"{match['head']}{quote}{REDACTED}{quote}"


def _redact_text(text: str) -> str:
    return _INLINE_SECRET.sub(_mask_inline, _URL_PASSWORD.sub(rf"\g<head>{REDACTED}", text))


def _redact(value: Any) -> Any:
    """A copy of ``value`` with secrets masked; the caller's objects are left untouched."""
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and _SECRET_KEY.search(key) else _redact(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact(item) for item in value]
    return value


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret values anywhere in the event dict."""
    return _redact(event_dict)


def _renderer_chain(json: bool, colors: bool) -> list[Processor]:
    if json:
        without_locals = ExceptionDictTransformer(show_locals=False)
        exceptions: Processor = structlog.processors.ExceptionRenderer(without_locals)
        return [exceptions, redact_secrets, structlog.processors.JSONRenderer()]
    return [
        structlog.processors.format_exc_info,
        redact_secrets,
        structlog.dev.ConsoleRenderer(colors=colors),
    ]


def configure_logging(*, json: bool | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging; ``stream`` defaults to the current sys.stderr.

    ``json=None`` means JSON unless the stream is a terminal.
    """
    stream = sys.stderr if stream is None else stream
    is_terminal = bool(getattr(stream, "isatty", lambda: False)())
    json = not is_terminal if json is None else json
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering = _renderer_chain(json, colors=is_terminal)
    structlog.configure(
        processors=[*shared, *rendering],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
        )
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(numeric_level)
