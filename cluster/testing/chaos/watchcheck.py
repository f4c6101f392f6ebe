"""The watch checker: every watch stream against the revision history that was actually committed.

etcd's watch guarantees (and Quorum's): events of a stream are ordered by revision, never duplicated,
without gaps (every change in the watched range at or after the start revision is delivered, up to what
the stream has reached), a transaction's events arrive in one response, and prev_kv is the key as it was
just before the change.

The committed history is reconstructed from the union of every stream's events and the ok writes of the
KV history; where two sources disagree about a revision, that is reported too. A stream "reached" a
revision when it delivered an event at it or a progress notification with it as header revision. A
stream resumed after a compaction may skip what was compacted (below the compact revision), nothing else.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cluster.testing.chaos.history import (
    Delete,
    DeleteResult,
    KeyValue,
    Operation,
    Put,
    Txn,
    WatchEvent,
    WatchSegment,
    WatchStream,
    describe,
    describe_kv,
)
from cluster.testing.chaos.model import in_range

Change = tuple[str, bytes]
"""("put", value) or ("delete", b"")."""


@dataclass(frozen=True, slots=True)
class WatchCheckResult:
    ok: bool
    report: str
    streams: int
    events: int


@dataclass(slots=True)
class CommittedHistory:
    """revision -> key -> change, as far as known; ``complete_upto``: every revision up to it is fully
    known (from a stream over the whole keyspace that reached it)."""

    changes: dict[int, dict[bytes, Change]]
    complete_upto: int
    compactions: frozenset[int] = frozenset()
    """Revisions compacted at. etcd sends no prev_kv when the previous revision is gone (its watch server
    reads prev_kv at rev-1 and skips it on ErrCompacted), and a compaction at rev removes a delete's
    tombstone at rev, so a watch from exactly a compact revision misses deletes at it."""

    @property
    def compacted(self) -> int:
        return max(self.compactions, default=0)

    _timeline: dict[bytes, tuple[list[int], list[KeyValue | None]]] | None = None

    def key_before(self, key: bytes, revision: int) -> KeyValue | None:
        """The key as it was at ``revision - 1`` (valid if revision - 1 <= complete_upto)."""
        if self._timeline is None:
            self._timeline = {}
            for rev in sorted(self.changes):
                for k, (kind, value) in self.changes[rev].items():
                    revs, states = self._timeline.setdefault(k, ([], []))
                    old = states[-1] if states else None
                    new = (
                        None
                        if kind == "delete"
                        else KeyValue(
                            k, value, old.create_revision if old else rev, rev, old.version + 1 if old else 1
                        )
                    )
                    revs.append(rev)
                    states.append(new)
        revs, states = self._timeline.get(key, ([], []))
        i = bisect.bisect_left(revs, revision)
        return states[i - 1] if i else None


def _event_change(ev: WatchEvent) -> Change:
    return (ev.type, ev.kv.value if ev.type == "put" else b"")


def reconstruct(
    ops: Iterable[Operation],
    watches: Iterable[WatchStream],
    keyspace: tuple[bytes, bytes],
    problems: list[str],
) -> CommittedHistory:
    changes: dict[int, dict[bytes, Change]] = {}
    origin: dict[tuple[int, bytes], str] = {}

    def add(rev: int, key: bytes, change: Change, source: str) -> None:
        known = changes.setdefault(rev, {}).get(key)
        if known is None:
            changes[rev][key] = change
            origin[(rev, key)] = source
        elif known != change:
            problems.append(
                f"sources disagree about rev {rev} key {key.decode('latin-1')}: "
                f"{origin[(rev, key)]} says {_change(known)}, {source} says {_change(change)}"
            )

    for watch in watches:
        for seg in watch.segments:
            for resp in seg.responses:
                for ev in resp.events:
                    add(ev.kv.mod_revision, ev.kv.key, _event_change(ev), f"watch#{watch.id}")
    for op in ops:
        if op.outcome != "ok" or op.response is None or op.response.error:
            continue
        req = op.request
        if isinstance(req, Put):
            add(op.response.revision, req.key, ("put", req.value), describe(op))
        elif isinstance(req, Txn) and op.response.succeeded:
            for sub in req.success:
                if isinstance(sub, Put):
                    add(op.response.revision, sub.key, ("put", sub.value), describe(op))
        elif isinstance(req, Delete) and not req.range_end and _deleted(op):
            add(op.response.revision, req.key, ("delete", b""), describe(op))
    complete = 1
    for watch in watches:
        full = _covers(watch, keyspace) and watch.segments and watch.segments[0].start_revision <= 2
        if full and not any(_compacted(seg) for seg in watch.segments):
            complete = max(complete, _reached(watch))
    return CommittedHistory(changes, complete)


def _change(change: Change) -> str:
    return f"{change[0]} {change[1].decode('latin-1')!r}"


def _deleted(op: Operation) -> int:
    results = op.response.results if op.response else ()
    return results[0].deleted if results and isinstance(results[0], DeleteResult) else 0


def _covers(watch: WatchStream, keyspace: tuple[bytes, bytes]) -> bool:
    start, end = keyspace
    if watch.range_end == b"\x00":
        return watch.key <= start
    return bool(watch.range_end) and watch.key <= start and end <= watch.range_end


def _compacted(seg: WatchSegment) -> bool:
    return any(r.compact_revision for r in seg.responses)


def _reached(watch: WatchStream) -> int:
    top = 0
    for seg in watch.segments:
        for resp in seg.responses:
            for ev in resp.events:
                top = max(top, ev.kv.mod_revision)
            if resp.progress:
                top = max(top, resp.header_revision)
    return top


def check_stream(watch: WatchStream, history: CommittedHistory, keyspace: tuple[bytes, bytes]) -> list[str]:
    """The violations of one logical watch stream."""
    problems: list[str] = []
    name = f"watch#{watch.id} [{watch.key.decode('latin-1')}, {watch.range_end.decode('latin-1')})"
    seen: set[tuple[int, bytes]] = set()
    response_of_rev: dict[int, int] = {}
    delivered: dict[int, set[bytes]] = {}
    last = watch.segments[0].start_revision - 1 if watch.segments else 0  # nothing owed before the start
    allowed_gaps: list[tuple[int, int]] = []
    reached = 0
    serial = 0
    compacted_to = 0  # the highest compaction any earlier segment was told of
    for s, seg in enumerate(watch.segments):
        if s and seg.start_revision > last + 1:
            # A compaction reported in any earlier segment excuses the gap below it: a segment that
            # got no response at all (its member was down) carries the excuse on to the next one.
            if compacted_to >= seg.start_revision:
                allowed_gaps.append((last + 1, seg.start_revision - 1))
            else:
                problems.append(
                    f"{name} segment {s}: resumed at rev {seg.start_revision}, past undelivered revisions "
                    f"after {last} without a compaction"
                )
        if not s:
            allowed_gaps.append((0, seg.start_revision - 1))
        for resp in seg.responses:
            serial += 1
            compacted_to = max(compacted_to, resp.compact_revision)
            if resp.progress:
                reached = max(reached, resp.header_revision)
            for ev in resp.events:
                rev, key = ev.kv.mod_revision, ev.kv.key
                where = f"{name} segment {s} response {serial} (t={resp.received:.4f})"
                if not in_range(key, watch.key, watch.range_end):
                    problems.append(f"{where}: event for key {key!r} outside the watched range")
                if rev < seg.start_revision:
                    problems.append(
                        f"{where}: event at rev {rev} before the start revision {seg.start_revision}"
                    )
                if (rev, key) in seen:
                    problems.append(f"{where}: duplicate event rev {rev} key {key.decode('latin-1')}")
                    continue
                if rev < last:
                    problems.append(f"{where}: out-of-order event rev {rev} after rev {last}")
                if rev in response_of_rev and response_of_rev[rev] != serial:
                    problems.append(
                        f"{where}: events of rev {rev} split across responses (a txn's events "
                        "must arrive together)"
                    )
                seen.add((rev, key))
                response_of_rev[rev] = serial
                delivered.setdefault(rev, set()).add(key)
                last = max(last, rev)
                reached = max(reached, rev)
                if rev <= history.complete_upto + 1 and history.complete_upto > 1:
                    problems.extend(f"{where}: {p}" for p in _check_event(ev, watch.prev_kv, history))
    problems.extend(_gaps(name, watch, history, delivered, reached, allowed_gaps, keyspace))
    return problems


def _check_event(ev: WatchEvent, want_prev: bool, history: CommittedHistory) -> list[str]:
    """The event's kv and prev_kv against the replayed history (only where it is fully known)."""
    rev, key = ev.kv.mod_revision, ev.kv.key
    before = history.key_before(key, rev)
    out: list[str] = []
    if ev.type == "put":
        want = KeyValue(
            key,
            ev.kv.value,
            before.create_revision if before else rev,
            rev,
            before.version + 1 if before else 1,
        )
        if ev.kv != want:
            out.append(f"event {describe_kv(ev.kv)} but the history gives {describe_kv(want)}")
    lost_to_compaction = ev.prev_kv is None and history.compacted >= rev
    if want_prev and ev.prev_kv != before and not lost_to_compaction:
        got = describe_kv(ev.prev_kv) if ev.prev_kv else "none"
        exp = describe_kv(before) if before else "none"
        out.append(f"rev {rev} key {key.decode('latin-1')}: prev_kv {got}, expected {exp}")
    return out


def _gaps(
    name: str,
    watch: WatchStream,
    history: CommittedHistory,
    delivered: dict[int, set[bytes]],
    reached: int,
    allowed: list[tuple[int, int]],
    keyspace: tuple[bytes, bytes],
) -> list[str]:
    out: list[str] = []
    whole = _covers(watch, keyspace)
    for rev in range(2, reached + 1):
        if any(lo <= rev <= hi for lo, hi in allowed):
            continue
        changes = history.changes.get(rev, {})
        want = {k for k in changes if in_range(k, watch.key, watch.range_end)}
        tombstones_compacted = rev in history.compactions and any(
            s.start_revision == rev for s in watch.segments
        )
        if tombstones_compacted:
            want = {k for k in want if changes[k][0] == "put"}
        missing = want - delivered.get(rev, set())
        if missing:
            keys = ", ".join(sorted(k.decode("latin-1") for k in missing))
            out.append(
                f"{name}: gap — rev {rev} ({keys}) committed but not delivered (stream reached {reached})"
            )
        elif whole and rev not in delivered and rev <= history.complete_upto and not tombstones_compacted:
            out.append(f"{name}: gap — no event at rev {rev} though the stream watches the whole keyspace")
    return out


def check_watches(
    ops: Iterable[Operation],
    watches: Iterable[WatchStream],
    keyspace: tuple[bytes, bytes],
    *,
    compactions: Iterable[int] = (),
    report_path: Path | None = None,
) -> WatchCheckResult:
    """Check every stream; ``keyspace`` is [start, end) of every key the workload writes."""
    ops, watches = list(ops), list(watches)
    problems: list[str] = []
    history = reconstruct(ops, watches, keyspace, problems)
    history.compactions = frozenset(compactions)
    for watch in watches:
        problems.extend(check_stream(watch, history, keyspace))
    events = sum(len(r.events) for w in watches for s in w.segments for r in s.responses)
    report = ""
    if problems:
        shown = problems[:40]
        more = [f"... and {len(problems) - len(shown)} more"] if len(problems) > len(shown) else []
        report = "Watch guarantees violated:\n" + "\n".join(f"  {p}" for p in [*shown, *more]) + "\n"
        if report_path is not None:
            report_path.parent.mkdir(parents=True, exist_ok=True)
            report_path.write_text(report)
    return WatchCheckResult(not problems, report, len(watches), events)
