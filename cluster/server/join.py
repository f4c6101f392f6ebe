"""Joining a running cluster (--initial-cluster-state existing), as etcd does it.

A member added with `member add` starts without a WAL and learns who it is from the cluster: it asks
the other members listed in --initial-cluster for their member list (the peer port's Members rpc,
etcd's GET /members), checks that --initial-cluster describes exactly that list (same number of
members, each matched by its peer URLs) and takes its member id and the cluster id from it. Raft then
starts with no configuration of its own; the leader sends the log (or a snapshot) that makes it a
member.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc

from cluster.api.gen.quorumpb import raft_pb2 as pb
from cluster.server import ids
from cluster.transport.wire import MEMBERS_METHOD, grpc_target

log = logging.getLogger("quorum.join")

FETCH_TIMEOUT = 10.0
"""How long to keep asking the listed peers (etcd gives GetClusterFromRemotePeers 10 s)."""


class JoinError(RuntimeError):
    """The member cannot join: the message says why, in etcd's words where etcd has them."""


@dataclass(frozen=True)
class Joined:
    member_id: int
    cluster_id: int
    peers: dict[int, list[str]]
    """Every member's peer URLs, so the transport can dial them before anything is applied."""


async def fetch_members(peer_urls: Iterable[str], timeout: float = FETCH_TIMEOUT) -> pb.MembersResponse:
    """The member list of the first listed peer that answers (a peer without a cluster yet, or that
    answers with no members, does not count)."""
    urls = list(peer_urls)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    errors: list[str] = []
    while True:
        for url in urls:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                async with grpc.aio.insecure_channel(grpc_target(url)) as channel:
                    call = channel.unary_unary(MEMBERS_METHOD, None, None)
                    raw = await call(pb.MembersRequest().SerializeToString(), timeout=min(2.0, left))
                answer = pb.MembersResponse.FromString(raw)
                if answer.cluster_id and answer.members:
                    return answer
                errors.append(f"{url}: no member list yet")
            except (grpc.RpcError, ValueError) as exc:
                errors.append(f"{url}: {exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc}")
                log.warning("failed to get cluster response", extra={"address": url, "error": errors[-1]})
        if loop.time() + 0.5 >= deadline:
            raise JoinError(
                "cannot fetch cluster info from peer urls: could not retrieve cluster information from the "
                "given URLs"
            )
        await asyncio.sleep(0.5)


def assign_ids(
    name: str, initial_cluster: Mapping[str, Iterable[object]], existing: pb.MembersResponse
) -> Joined:
    """etcd's ValidateClusterAndAssignIDs: --initial-cluster must list exactly the running members."""
    local = {n: sorted(str(u) for u in urls) for n, urls in initial_cluster.items()}
    if name not in local:
        raise JoinError(f"couldn't find local name {name!r} in the initial cluster configuration")
    remote = {m.ID: sorted(m.raft_attributes.peer_urls) for m in existing.members}
    described = _describe(existing)
    if len(remote) != len(local):
        raise JoinError(f"error validating peerURLs {described}: member count is unequal")
    by_name: dict[str, int] = {}
    for member_id, urls in remote.items():
        match = next((n for n, local_urls in local.items() if local_urls == urls and n not in by_name), None)
        if match is None:
            raise JoinError(
                f"error validating peerURLs {described}: PeerURLs: no match found for existing member "
                f"({ids.format_id(member_id)}, {urls}), last resolver error (<nil>)"
            )
        by_name[match] = member_id
    return Joined(by_name[name], existing.cluster_id, {m: list(urls) for m, urls in remote.items()})


def _describe(existing: pb.MembersResponse) -> str:
    """etcd prints the remote cluster with Go's %v of its RaftCluster."""
    members = " ".join(
        f"&{{ID:{ids.format_id(m.ID)} RaftAttributes:{{PeerURLs:[{' '.join(m.raft_attributes.peer_urls)}] "
        f"IsLearner:{str(m.raft_attributes.is_learner).lower()}}} Attributes:{{Name:{m.attributes.name} "
        f"ClientURLs:[{' '.join(m.attributes.client_urls)}]}}}}"
        for m in existing.members
    )
    removed = " ".join(ids.format_id(r) for r in existing.removed)
    cluster = ids.format_id(existing.cluster_id)
    return f"{{ClusterID:{cluster} Members:[{members}] RemovedMemberIDs:[{removed}]}}"
