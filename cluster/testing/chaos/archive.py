"""A history as JSON and back, so a failed run's history can be read, edited and checked again
(``python -m cluster.testing.chaos.recheck report_dir/history.json``).

Every dataclass is written as an object tagged with its class name ("_"), bytes as latin-1 text (keys and
values of the workload are ASCII, so the file stays readable) and an infinite return time as null.
Reading goes by the tags and the dataclasses' field types, so the format needs no schema of its own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any

from cluster.testing.chaos import history as h

_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        h.KeyValue, h.Put, h.Range, h.Delete, h.Compare, h.Txn, h.RangeResult, h.DeleteResult, h.PutResult,
        h.Response, h.Operation, h.WatchEvent, h.WatchResponse, h.WatchSegment, h.WatchStream,
        h.LeaseGrant, h.LeaseRevoke, h.LeaseKeepAlive, h.LeaseExpire,
    )
}  # fmt: skip


def _encode(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"_": type(obj).__name__, **fields}
    if isinstance(obj, bytes):
        return obj.decode("latin-1")
    if isinstance(obj, float) and math.isinf(obj):
        return None
    if isinstance(obj, list | tuple):
        return [_encode(v) for v in obj]
    return obj


def _wants_text(hint: Any) -> bool:
    """Whether a field of this type holds text (str or a Literal of str) rather than bytes."""
    if hint is str or typing.get_origin(hint) is typing.Literal:
        return True
    return any(_wants_text(a) for a in typing.get_args(hint)) and bytes not in typing.get_args(hint)


def _decode(data: Any, hint: Any = None) -> Any:
    if isinstance(data, dict) and "_" in data:
        cls = _CLASSES[data["_"]]
        hints = typing.get_type_hints(cls, vars(h))
        kwargs = {
            f.name: _decode(data[f.name], hints[f.name]) for f in dataclasses.fields(cls) if f.name in data
        }
        return cls(**kwargs)
    if isinstance(data, list):
        return tuple(_decode(v) for v in data)
    if isinstance(data, str) and not _wants_text(hint):
        return data.encode("latin-1")
    if data is None and hint is float:
        return math.inf
    return data


def dump(history: h.History) -> str:
    return json.dumps(
        {
            "operations": _encode(history.operations),
            "watches": _encode(history.watches),
            "compactions": history.compactions,
            "incarnations": history.incarnations,
            "pauses": history.pauses,
        }
    )


def load(text: str) -> h.History:
    data = json.loads(text)
    return h.History(
        operations=list(_decode(data["operations"])),
        watches=list(_decode(data["watches"])),
        compactions=list(data.get("compactions", [])),
        incarnations=dict(data.get("incarnations", {})),
        pauses=[tuple(p) for p in data.get("pauses", [])],
    )
