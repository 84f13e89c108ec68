"""PostgreSQL event store: database resolution, migrations, the batched event writer."""
from router.store.database import (
    connect,
    create_pool,
    default_spool_dir,
    dsn_target,
    ensure_schema,
    register_jsonb,
    resolve_dsn,
    safe_dsn,
)
from router.store.migrate import migrate
from router.store.writer import EventWriter, InvalidEvent, WriterFull

__all__ = [
    "EventWriter", "InvalidEvent", "WriterFull", "connect", "create_pool", "default_spool_dir",
    "dsn_target", "ensure_schema", "migrate", "register_jsonb", "resolve_dsn", "safe_dsn",
]
