"""The logging pipeline: context binding, redaction, stream, JSON and console output."""
from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from router.logging import REDACTED, configure_logging, redact_secrets


@pytest.fixture(autouse=True)
def clean_logging():
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "acd-router"]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_carries_bound_call_id_level_and_utc_timestamp():
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    structlog.contextvars.bind_contextvars(call_id="c-42")
    structlog.get_logger().info("queue.joined", queue="sales")
    structlog.get_logger("other.module").warning("agent.no_answer", agent="a1")
    first, second = lines(stream)
    assert first["call_id"] == second["call_id"] == "c-42"
    assert first["event"] == "queue.joined" and first["queue"] == "sales"
    assert first["level"] == "info" and second["level"] == "warning"
    assert first["timestamp"].endswith("Z")


def test_level_filters_lines():
    stream = io.StringIO()
    configure_logging(json=True, level="warning", stream=stream)
    structlog.get_logger().info("hidden")
    structlog.get_logger().error("shown")
    assert [line["event"] for line in lines(stream)] == ["shown"]


def test_unknown_level_is_an_error():
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="chatty", stream=io.StringIO())


def test_secrets_are_redacted_at_any_depth():
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    action = {"Action": "Login", "Username": "router", "Secret": "s3cr3t"}
    structlog.get_logger().info(
        "ami.send",
        action=action,
        nested={"db": {"password": "pw1", "hosts": [{"api_token": "tk"}]}},
        dsn="postgresql://acd:pw2@db.example:5432/acd",
        raw="Action: Login\r\nUsername: router\r\nSecret: s3cr3t\r\n",
    )
    text = stream.getvalue()
    for secret in ("s3cr3t", "pw1", "pw2", '"tk"'):
        assert secret not in text
    (line,) = lines(stream)
    assert line["action"] == {"Action": "Login", "Username": "router", "Secret": REDACTED}
    assert line["nested"]["db"]["password"] == REDACTED
    assert line["nested"]["db"]["hosts"] == [{"api_token": REDACTED}]
    assert line["dsn"] == f"postgresql://acd:{REDACTED}@db.example:5432/acd"
    assert f"Secret: {REDACTED}" in line["raw"] and "Username: router" in line["raw"]
    assert action["Secret"] == "s3cr3t", "the caller's dict must not be changed"


def test_secret_bound_in_context_is_redacted():
    pipeline = [structlog.contextvars.merge_contextvars, redact_secrets]
    with structlog.testing.capture_logs(processors=pipeline) as logs:
        structlog.contextvars.bind_contextvars(call_id="c-1", token="abc")
        structlog.get_logger().info("call.arrived")
    assert logs == [{"event": "call.arrived", "log_level": "info", "call_id": "c-1", "token": REDACTED}]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("{'action': 'Login', 'secret': 'x y'}", "{'action': 'Login', 'secret': '***'}"),
        ("<Message secret='abc' username='u'>", "<Message secret='***' username='u'>"),
        ("host=db password=hunter2 dbname=acd", "host=db password=*** dbname=acd"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("https://example.org/a@b", "https://example.org/a@b"),
        ("token refreshed for agent 1001", "token refreshed for agent 1001"),
    ],
)
def test_secrets_inside_free_text(text, expected):
    assert redact_secrets(None, "info", {"event": text}) == {"event": expected}


def test_stdlib_logging_goes_through_the_same_pipeline():
    # panoramisk logs whole AMI actions through the standard library.
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    structlog.contextvars.bind_contextvars(call_id="c-7")
    logging.getLogger("panoramisk.manager").info(
        'Adding action "login" to awaiting list: %s', "Action: Login\r\nSecret: s3cr3t\r\n"
    )
    (line,) = lines(stream)
    assert "s3cr3t" not in stream.getvalue()
    assert line["logger"] == "panoramisk.manager"
    assert line["call_id"] == "c-7" and line["level"] == "info"


def test_exceptions_are_rendered_and_redacted():
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    try:
        raise ConnectionError("cannot reach postgresql://acd:pw3@db/acd")
    except ConnectionError:
        structlog.get_logger().exception("store.down")
    (line,) = lines(stream)
    assert "pw3" not in stream.getvalue()
    assert line["exception"][0]["exc_type"] == "ConnectionError"


def test_logs_go_to_the_given_stream_not_stdout(capsys):
    stream = io.StringIO()
    configure_logging(stream=stream)  # a StringIO is not a terminal: JSON
    structlog.get_logger().info("hello")
    logging.getLogger("asyncpg").warning("pool closed")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert [line["event"] for line in lines(stream)] == ["hello", "pool closed"]


def test_default_stream_is_stderr(capsys):
    configure_logging(json=True)
    structlog.get_logger().info("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err)["event"] == "to stderr"


def test_console_renderer_for_people():
    stream = io.StringIO()
    configure_logging(json=False, stream=stream)
    structlog.get_logger().info("agent.state", agent="a1", password="pw4")
    text = stream.getvalue()
    assert "agent.state" in text and "agent=a1" in text
    assert "pw4" not in text and "\x1b[" not in text


def test_configuring_twice_leaves_one_handler_and_the_latest_stream():
    first, second = io.StringIO(), io.StringIO()
    logger = structlog.get_logger()
    configure_logging(json=True, stream=first)
    configure_logging(json=True, stream=second)
    logger.info("once")
    logging.getLogger("x").warning("also once")
    assert first.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["once", "also once"]
    assert [h.get_name() for h in logging.getLogger().handlers].count("acd-router") == 1
