"""Log lines have the shape of etcd's zap JSON logger and go where --log-outputs says."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.server import log as qlog
from cluster.server.config import parse_config

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d{4})$")


@pytest.fixture
def logger_name(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"quorum-test-{request.node.name}"
    yield name
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def capture(monkeypatch: pytest.MonkeyPatch, stream: str = "stderr") -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(sys, stream, buffer)
    return buffer


def test_line_is_one_json_object_with_zap_keys_first(
    monkeypatch: pytest.MonkeyPatch, logger_name: str
) -> None:
    err = capture(monkeypatch)
    logger = qlog.setup_logging(parse_config(["--logger=zap"], {}), name=logger_name)
    logger.info("ready to serve client requests", extra={"address": "127.0.0.1:2379", "urls": ("a", "b")})
    lines = [line for line in err.getvalue().splitlines() if "ready" in line]
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert list(record)[:4] == ["level", "ts", "caller", "msg"]
    assert record["level"] == "info"
    assert record["msg"] == "ready to serve client requests"
    assert record["address"] == "127.0.0.1:2379"
    assert record["urls"] == ["a", "b"]
    assert TS_RE.match(record["ts"])
    assert record["caller"].startswith("unit/test_log.py:")


def test_fields_helper_uses_etcds_dashed_keys(monkeypatch: pytest.MonkeyPatch, logger_name: str) -> None:
    err = capture(monkeypatch)
    logger = qlog.setup_logging(parse_config(["--logger=zap"], {}), name=logger_name)
    extra = qlog.fields(local_member_id="8e9e05c52164694d", cluster_id="x")
    logger.info("starting local member", extra=extra)
    record = json.loads(err.getvalue().splitlines()[-1])
    assert record["local-member-id"] == "8e9e05c52164694d"
    assert record["cluster-id"] == "x"


def test_levels_use_zap_names_and_threshold(monkeypatch: pytest.MonkeyPatch, logger_name: str) -> None:
    err = capture(monkeypatch)
    logger = qlog.setup_logging(parse_config(["--logger=zap", "--log-level=warn"], {}), name=logger_name)
    logger.info("hidden")
    logger.warning("w")
    logger.error("e")
    logger.log(qlog.PANIC, "p")
    logger.critical("f")
    levels = [json.loads(line)["level"] for line in err.getvalue().splitlines()]
    assert levels == ["warn", "error", "panic", "fatal"]


def test_debug_flag_enables_debug_lines(monkeypatch: pytest.MonkeyPatch, logger_name: str) -> None:
    err = capture(monkeypatch)
    logger = qlog.setup_logging(parse_config(["--logger=zap", "--debug"], {}), name=logger_name)
    logger.debug("dbg")
    assert json.loads(err.getvalue().splitlines()[-1])["level"] == "debug"


def test_exception_adds_error_and_stacktrace(monkeypatch: pytest.MonkeyPatch, logger_name: str) -> None:
    err = capture(monkeypatch)
    logger = qlog.setup_logging(parse_config(["--logger=zap"], {}), name=logger_name)
    try:
        raise OSError("disk gone")
    except OSError:
        logger.exception("failed to save")
    record = json.loads(err.getvalue().splitlines()[-1])
    assert record["level"] == "error"
    assert record["error"] == "disk gone"
    assert "OSError: disk gone" in record["stacktrace"]


def test_outputs_stdout_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, logger_name: str) -> None:
    out = capture(monkeypatch, "stdout")
    err = capture(monkeypatch, "stderr")
    path = tmp_path / "q.log"
    config = parse_config(["--logger=zap", f"--log-outputs=stdout,{path}"], {})
    logger = qlog.setup_logging(config, name=logger_name)
    logger.info("hello")
    for handler in logger.handlers:
        handler.flush()
    assert json.loads(out.getvalue().splitlines()[-1])["msg"] == "hello"
    assert json.loads(path.read_text().splitlines()[-1])["msg"] == "hello"
    assert err.getvalue() == ""


def test_capnslog_logger_also_writes_json(monkeypatch: pytest.MonkeyPatch, logger_name: str) -> None:
    err = capture(monkeypatch)
    logger = qlog.setup_logging(parse_config(["--logger=capnslog"], {}), name=logger_name)
    logger.info("x")
    lines = [json.loads(line) for line in err.getvalue().splitlines()]
    assert lines[-1]["msg"] == "x"
    assert any("capnslog" in line["msg"] and line["level"] == "warn" for line in lines)


def test_setup_twice_replaces_only_its_own_handlers(
    monkeypatch: pytest.MonkeyPatch, logger_name: str
) -> None:
    err = capture(monkeypatch)
    foreign = logging.NullHandler()
    logger = logging.getLogger(logger_name)
    logger.addHandler(foreign)
    config = parse_config(["--logger=zap"], {})
    qlog.setup_logging(config, name=logger_name)
    qlog.setup_logging(config, name=logger_name)
    logger.info("once")
    assert err.getvalue().count('"msg":"once"') == 1
    assert foreign in logger.handlers


def test_env_notices_are_logged_once_logging_is_up(monkeypatch: pytest.MonkeyPatch, logger_name: str) -> None:
    err = capture(monkeypatch)
    qlog.setup_logging(parse_config(["--logger=zap"], {"ETCD_NAME": "n", "ETCD_NOPE": "1"}), name=logger_name)
    records = [json.loads(line) for line in err.getvalue().splitlines()]
    pairs = [(r["level"], r["msg"]) for r in records]
    assert ("info", "recognized and used environment variable ETCD_NAME=n") in pairs
    assert ("warn", "unrecognized environment variable ETCD_NOPE=1") in pairs


def test_timestamp_matches_zap_iso8601_in_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        moment = dt.datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=dt.UTC).timestamp()
        assert qlog.zap_timestamp(moment) == "2026-11-26T12:00:00.123Z"
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="needs time.tzset")
def test_timestamp_carries_a_local_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        moment = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC).timestamp()
        assert qlog.zap_timestamp(moment) == "2026-11-26T13:00:00.000+0100"
    finally:
        monkeypatch.undo()
        time.tzset()
        assert os.environ.get("TZ") != "Europe/Berlin"
