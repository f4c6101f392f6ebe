"""Raft scenarios written as data (tests/sim/scenarios/*.txt).

One command per line; `#` starts a comment. Messages are delivered synchronously until the network
is quiet after every command (cluster.testing.raftsim.Network). Commands:

    cluster N [pre_vote=1] [check_quorum=1] [max_inflight_msgs=K] ...   start N members
    start ID                                      a new member, empty log, joins the network
    stop ID                                       the member stops for good (a black hole from now)
    campaign ID | propose ID [DATA...] | read ID CTX | transfer TO [via=ID]
    tick ID [N] | tick-all [N]                    tick and deliver what it caused
    isolate ID | cut A B | drop FROM TO | ignore MSGTYPE | recover
    conf ID add|remove|learner|promote NODE       propose a membership change through ID
    refuse-conf ID REASON | accept-conf ID        ID's application refuses (accepts) every change
    apply                                         every member applies its committed entries
    compact ID                                    snapshot at applied and compact the log
    expect ID key=value...                        state, term, lead, vote, commit, last, applied,
                                                  voters, learners (ids joined by commas)
    expect-confs ID [TYPE:NODE[:REASON]...]       the membership changes ID applied, in order
    expect-read ID INDEX CTX                      next ReadState of ID
    expect-no-read ID
    expect-logs-equal [ID...]                     logs of the members are identical
    expect-dropped ID DATA                        proposing on ID raises ProposalDropped
A failing line is reported as file:line.

A new member (`start`) begins from the configuration the cluster started with, as the first members
do (their logs start empty, after that configuration), and learns every later change from the log.
A promotion is an ADD_NODE of a learner (single-step changes, as etcd 3.4). A refused change is what
RaftConfig.check_conf_change makes of it: a change of node 0 whose context is the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from cluster.raft import ProposalDropped, decode_conf_change, encode_conf_change
from cluster.raft.raft import Raft
from cluster.raft.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    StateType,
)
from cluster.testing.raftsim import Network, compact_log, new_test_raft, next_ents, read_messages

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.txt"))
CONF_TYPES = {
    "add": ConfChangeType.ADD_NODE,
    "promote": ConfChangeType.ADD_NODE,
    "remove": ConfChangeType.REMOVE_NODE,
    "learner": ConfChangeType.ADD_LEARNER_NODE,
}
CONF_NAMES = {ConfChangeType.ADD_NODE: "add", ConfChangeType.REMOVE_NODE: "remove",
              ConfChangeType.ADD_LEARNER_NODE: "learner"}  # fmt: skip


def _value(text: str) -> object:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        return text


def _ids(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted(ids))


class ScenarioRunner:
    def __init__(self) -> None:
        self.nt: Network | None = None
        self.config: dict[str, Any] = {}
        self.initial_voters: tuple[int, ...] = ()
        self.applied_confs: dict[int, list[str]] = {}

    @property
    def net(self) -> Network:
        assert self.nt is not None, "scenario must start with `cluster N`"
        return self.nt

    def r(self, node_id: str) -> Raft:
        return self.net.raft(int(node_id))

    def run_line(self, line: str) -> None:
        words = line.split()
        cmd, args = words[0], words[1:]
        getattr(self, "do_" + cmd.replace("-", "_"))(*args)

    def tick(self, r: Raft, n: int) -> None:
        for _ in range(n):
            r.tick()
            self.net.send(*self.net.filter(read_messages(r)))

    # ---- commands --------------------------------------------------------------------------

    def do_cluster(self, n: str, *opts: str) -> None:
        self.config = {k: _value(v) for k, v in (o.split("=", 1) for o in opts)}
        self.nt = Network.of_size(int(n), **self.config)
        self.initial_voters = tuple(self.net.peers)

    def do_start(self, node_id: str) -> None:
        i = int(node_id)
        assert i not in self.net.peers, f"node {i} exists"
        self.net.peers[i] = new_test_raft(i, self.initial_voters, **self.config)

    def do_stop(self, node_id: str) -> None:
        self.net.peers[int(node_id)] = None

    def do_campaign(self, node_id: str) -> None:
        self.net.campaign(int(node_id))

    def do_propose(self, node_id: str, *datas: str) -> None:
        self.net.propose(int(node_id), *(d.encode() for d in datas))

    def do_read(self, node_id: str, ctx: str) -> None:
        i = int(node_id)
        req = (Entry(0, 0, data=ctx.encode()),)
        self.net.send(Message(type=MessageType.READ_INDEX, from_=i, to=i, entries=req))

    def do_transfer(self, to: str, *opts: str) -> None:
        via = int(opts[0].split("=")[1]) if opts else next(
            i for i, p in self.net.peers.items() if p is not None and p.state == StateType.LEADER
        )
        self.net.send(Message(type=MessageType.TRANSFER_LEADER, from_=int(to), to=via))

    def do_tick(self, node_id: str, n: str = "1") -> None:
        self.tick(self.r(node_id), int(n))

    def do_tick_all(self, n: str = "1") -> None:
        for _ in range(int(n)):
            for p in self.net.peers.values():
                if p is not None:
                    self.tick(p, 1)

    def do_isolate(self, node_id: str) -> None:
        self.net.isolate(int(node_id))

    def do_cut(self, a: str, b: str) -> None:
        self.net.cut(int(a), int(b))

    def do_drop(self, a: str, b: str) -> None:
        self.net.drop(int(a), int(b), 1.0)

    def do_ignore(self, msg_type: str) -> None:
        self.net.ignore(MessageType[msg_type.upper()])

    def do_recover(self) -> None:
        self.net.recover()

    def do_conf(self, node_id: str, kind: str, target: str) -> None:
        cc = ConfChange(CONF_TYPES[kind], int(target))
        e = Entry(0, 0, EntryType.CONF_CHANGE, encode_conf_change(cc))
        i = int(node_id)
        self.net.send(Message(type=MessageType.PROP, from_=i, to=i, entries=(e,)))

    def do_refuse_conf(self, node_id: str, reason: str) -> None:
        self.r(node_id).check_conf_change = lambda cc: reason

    def do_accept_conf(self, node_id: str) -> None:
        self.r(node_id).check_conf_change = None

    def do_apply(self) -> None:
        for i, p in self.net.peers.items():
            if p is None:
                continue
            for e in next_ents(p):
                if e.type == EntryType.CONF_CHANGE:
                    cc = decode_conf_change(e.data)
                    p.apply_conf_change(cc)
                    done = f"{CONF_NAMES[cc.type]}:{cc.node_id}"
                    self.applied_confs.setdefault(i, []).append(
                        f"{done}:{cc.context.decode()}" if cc.context else done
                    )
            self.net.send(*self.net.filter(read_messages(p)))

    def do_compact(self, node_id: str) -> None:
        compact_log(self.r(node_id))

    def do_expect(self, node_id: str, *pairs: str) -> None:
        r = self.r(node_id)
        actual = {
            "state": r.state.name.lower(),
            "term": r.term,
            "lead": r.lead,
            "vote": r.vote,
            "commit": r.log.committed,
            "last": r.log.last_index(),
            "applied": r.log.applied,
            "voters": _ids(r.prs.voters),
            "learners": _ids(r.prs.learners),
        }
        for pair in pairs:
            key, want = pair.split("=", 1)
            got = actual[key]
            assert str(got) == want, f"node {node_id}: {key} is {got}, want {want}"

    def do_expect_confs(self, node_id: str, *changes: str) -> None:
        applied = self.applied_confs.get(int(node_id), [])
        assert applied == list(changes), f"node {node_id} applied {applied}"

    def do_expect_read(self, node_id: str, index: str, ctx: str) -> None:
        r = self.r(node_id)
        assert r.read_states, f"node {node_id} has no read state"
        rs = r.read_states.pop(0)
        assert (rs.index, rs.request_ctx) == (int(index), ctx.encode())

    def do_expect_no_read(self, node_id: str) -> None:
        assert self.r(node_id).read_states == []

    def do_expect_logs_equal(self, *ids: str) -> None:
        members = [int(i) for i in ids] or [i for i, p in self.net.peers.items() if p is not None]
        logs = {i: [(e.term, e.index, e.data) for e in self.net.raft(i).log.all_entries()] for i in members}
        first = logs[members[0]]
        for i, log in logs.items():
            assert log == first, f"log of node {i} differs from node {members[0]}"

    def do_expect_dropped(self, node_id: str, data: str) -> None:
        r = self.r(node_id)
        with pytest.raises(ProposalDropped):
            prop = (Entry(0, 0, data=data.encode()),)
            r.step(Message(type=MessageType.PROP, from_=r.id, to=r.id, entries=prop))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path) -> None:
    runner = ScenarioRunner()
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            runner.run_line(line)
        except Exception as e:
            raise AssertionError(f"{path.name}:{lineno}: `{line}`: {e}") from e


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 5
