"""Structured logging in the shape of etcd's zap JSON logger.

Each record is one JSON object on one line, keys in zap's order: ``level``, ``ts``, ``caller``, ``msg``,
then the record's structured fields under etcd's key names, e.g.::

    {"level":"info","ts":"2026-11-26T12:00:00.123Z","caller":"server/node.py:88",
     "msg":"ready to serve client requests","address":"127.0.0.1:2379"}

* ``level`` is zap's lower-case name (debug, info, warn, error, panic, fatal).
* ``ts`` is zap's ISO 8601 encoder: local time, milliseconds, ``Z`` for UTC else ``+hhmm``.
* ``caller`` is zap's short form: the last directory and the file, with the line number.
* Fields are passed through ``extra``: ``log.info("msg", extra={"local-member-id": "8e9e05c52164694d"})``,
  or ``extra=fields(local_member_id=...)`` which turns ``_`` into etcd's ``-``.
* An exception logged with ``exc_info`` adds ``error`` and ``stacktrace``, as zap does at error level.

``--log-outputs`` takes ``stderr``, ``stdout`` and file paths (appended to), several at once;
``default`` means stderr (etcd would use journald under systemd; we never do).

``--logger capnslog`` produces the same JSON lines (etcd 3.5 removed capnslog; scripts that parse logs
already expect zap's shape). Lines are emitted on lifecycle events only, never per request, so the
formatter favours clarity over speed.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterable
from typing import Any, TextIO

PANIC = 45
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "dpanic": PANIC,
    "panic": PANIC,
    "fatal": logging.CRITICAL,
}
_ZAP_NAMES = ((logging.CRITICAL, "fatal"), (PANIC, "panic"), (logging.ERROR, "error"),
              (logging.WARNING, "warn"), (logging.INFO, "info"))  # fmt: skip
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_HANDLER_MARK = "_quorum_handler"


def zap_level_name(levelno: int) -> str:
    for threshold, name in _ZAP_NAMES:
        if levelno >= threshold:
            return name
    return "debug"


def zap_timestamp(created: float) -> str:
    """zap's ISO8601TimeEncoder: ``2006-01-02T15:04:05.000Z0700`` in local time."""
    moment = _dt.datetime.fromtimestamp(created).astimezone()
    offset = moment.utcoffset() or _dt.timedelta(0)
    if offset == _dt.timedelta(0):
        zone = "Z"
    else:
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}{zone}"


def fields(**values: Any) -> dict[str, Any]:
    """Structured fields with etcd's dashed key names: ``fields(local_member_id=1)`` → ``local-member-id``."""
    return {key.replace("_", "-"): value for key, value in values.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


class ZapJSONFormatter(logging.Formatter):
    """Formats a record as one zap-style JSON line (without the trailing newline)."""

    def format(self, record: logging.LogRecord) -> str:
        directory = os.path.basename(os.path.dirname(record.pathname))
        where = f"{record.filename}:{record.lineno}"
        caller = f"{directory}/{where}" if directory else where
        line: dict[str, Any] = {
            "level": zap_level_name(record.levelno),
            "ts": zap_timestamp(record.created),
            "caller": caller,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in line:
                line[key] = _jsonable(value)
        if record.exc_info and record.exc_info[1] is not None:
            line.setdefault("error", str(record.exc_info[1]))
            line["stacktrace"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


def _streams(outputs: Iterable[str]) -> list[logging.Handler]:
    handlers: list[logging.Handler] = []
    for output in outputs:
        if output in ("default", "stderr"):
            stream: TextIO = sys.stderr
            handlers.append(logging.StreamHandler(stream))
        elif output == "stdout":
            handlers.append(logging.StreamHandler(sys.stdout))
        else:
            handlers.append(logging.FileHandler(output, mode="a", encoding="utf-8"))
    return handlers


def setup_logging(config: Any, name: str = "") -> logging.Logger:
    """Install the zap-style JSON handlers on the logger ``name`` (the root logger by default).

    ``config`` needs ``effective_log_level`` (or ``log_level``) and ``log_outputs`` — a
    :class:`cluster.server.config.ServerConfig` has both. Calling it again replaces the handlers it
    installed before and leaves any other handler (pytest's, say) alone. The config's pending
    ``warnings``/``notices`` (environment variables used, deprecated flags) are logged once here.
    """
    level_name = getattr(config, "effective_log_level", None) or config.log_level
    outputs = tuple(getattr(config, "log_outputs", ("default",)) or ("default",))
    logger = logging.getLogger(name or None)
    for handler in list(logger.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            logger.removeHandler(handler)
            handler.close()
    formatter = ZapJSONFormatter()
    for handler in _streams(outputs):
        handler.setFormatter(formatter)
        setattr(handler, _HANDLER_MARK, True)
        logger.addHandler(handler)
    logger.setLevel(LEVELS[level_name])
    for notice in getattr(config, "notices", ()):
        logger.info(notice)
    for warning in getattr(config, "warnings", ()):
        logger.warning(warning)
    return logger
