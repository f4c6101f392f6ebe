"""Quorum's wire contract equals etcd 3.4's: messages, enums, services and errors.

etcd's own .proto files and rpctypes/error.go are read from the Go source tree that the Debian
package golang-etcd-server-dev installs; without it the comparison is skipped, not faked.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2

from cluster.api import errors, grpc_names
from cluster.api.gen.authpb import auth_pb2
from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.api.gen.mvccpb import kv_pb2
from cluster.api.gen.v3electionpb import v3election_pb2
from cluster.api.gen.v3lockpb import v3lock_pb2

GO_SRC = Path("/usr/share/gocode/src")
ETCD_SRC = GO_SRC / "go.etcd.io" / "etcd"
ETCD_PROTOS = [
    "etcd/etcdserver/etcdserverpb/rpc.proto",
    "etcd/mvcc/mvccpb/kv.proto",
    "etcd/auth/authpb/auth.proto",
    "etcd/etcdserver/api/v3election/v3electionpb/v3election.proto",
    "etcd/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
]
ETCD_PACKAGES = {"etcdserverpb", "mvccpb", "authpb", "v3electionpb", "v3lockpb"}
OUR_MODULES = [kv_pb2, auth_pb2, rpc_pb2, v3election_pb2, v3lock_pb2]



@pytest.fixture(scope="module")
def etcd_source() -> Path:
    """etcd's source tree; skipped locally when absent, a failure under CI (which installs it)."""
    if not ETCD_SRC.is_dir():
        reason = f"etcd 3.4 source not found at {ETCD_SRC} (install golang-etcd-server-dev)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return ETCD_SRC


needs_etcd_source = pytest.mark.usefixtures("etcd_source")


def _include_dir_of(relative: str, preferred: Path) -> Path:
    """The directory under GO_SRC from which `relative` (an import path) resolves."""
    if (preferred / relative).is_file():
        return preferred
    for found in GO_SRC.rglob(Path(relative).name):
        root = Path(str(found)[: -len(relative)])
        if str(found).endswith(relative) and (root / relative).is_file():
            return root
    pytest.skip(f"{relative} not found under {GO_SRC}")


def _compile_etcd(tmp: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    import grpc_tools
    from grpc_tools import protoc

    gogo = _include_dir_of("gogoproto/gogo.proto", GO_SRC / "github.com" / "gogo" / "protobuf")
    googleapis = _include_dir_of(
        "google/api/annotations.proto",
        GO_SRC / "github.com" / "grpc-ecosystem" / "grpc-gateway" / "third_party" / "googleapis",
    )
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out = tmp / "etcd.pb"
    args = [
        "protoc",
        f"-I{GO_SRC / 'go.etcd.io'}",
        f"-I{gogo}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--descriptor_set_out={out}",
        *ETCD_PROTOS,
    ]
    assert protoc.main(args) == 0, "protoc failed on etcd's own protos"
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return list(fds.file)


def _ours() -> list[descriptor_pb2.FileDescriptorProto]:
    files = []
    for module in OUR_MODULES:
        fdp = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fdp)
        files.append(fdp)
    return files


def _messages(
    prefix: str, messages: list[descriptor_pb2.DescriptorProto]
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for message in messages:
        name = f"{prefix}.{message.name}"
        yield name, message
        yield from _messages(name, list(message.nested_type))


def _index(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, dict[str, object]]:
    """Full name -> comparable shape, for every message, enum and service in etcd's packages."""
    shapes: dict[str, dict[str, object]] = {}
    for fdp in files:
        if fdp.package not in ETCD_PACKAGES:
            continue
        enums = [(f".{fdp.package}.{e.name}", e) for e in fdp.enum_type]
        for name, message in _messages(f".{fdp.package}", list(fdp.message_type)):
            oneofs = [o.name for o in message.oneof_decl]
            shapes[name] = {
                "kind": "message",
                "fields": sorted(
                    (
                        f.name,
                        f.number,
                        descriptor_pb2.FieldDescriptorProto.Type.Name(f.type),
                        descriptor_pb2.FieldDescriptorProto.Label.Name(f.label),
                        f.type_name,
                        oneofs[f.oneof_index] if f.HasField("oneof_index") else None,
                    )
                    for f in message.field
                ),
            }
            enums += [(f"{name}.{e.name}", e) for e in message.enum_type]
        for name, enum in enums:
            shapes[name] = {"kind": "enum", "values": [(v.name, v.number) for v in enum.value]}
        for service in fdp.service:
            shapes[f".{fdp.package}.{service.name}"] = {
                "kind": "service",
                "methods": [
                    (m.name, m.input_type, m.output_type, m.client_streaming, m.server_streaming)
                    for m in service.method
                ],
            }
    return shapes


@pytest.fixture(scope="module")
def etcd_shapes(etcd_source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    return _index(_compile_etcd(tmp_path_factory.mktemp("etcd_protos")))


@pytest.fixture(scope="module")
def our_shapes() -> dict[str, dict[str, object]]:
    return _index(_ours())


@needs_etcd_source
def test_every_etcd_message_enum_and_service_exists_in_ours(
    etcd_shapes: dict[str, dict[str, object]], our_shapes: dict[str, dict[str, object]]
) -> None:
    assert len(etcd_shapes) > 100
    assert sorted(set(etcd_shapes) - set(our_shapes)) == []


@needs_etcd_source
def test_ours_defines_nothing_extra_in_etcd_packages(
    etcd_shapes: dict[str, dict[str, object]], our_shapes: dict[str, dict[str, object]]
) -> None:
    assert sorted(set(our_shapes) - set(etcd_shapes)) == []


@needs_etcd_source
def test_fields_enum_values_and_methods_match_etcd(
    etcd_shapes: dict[str, dict[str, object]], our_shapes: dict[str, dict[str, object]]
) -> None:
    mismatched = {
        name: {"etcd": shape, "ours": our_shapes.get(name)}
        for name, shape in etcd_shapes.items()
        if our_shapes.get(name) != shape
    }
    assert mismatched == {}


# ---------------------------------------------------------------- errors

_GO_CODE_NAMES = {"Canceled": "CANCELLED"}


def _go_code_to_status(go_name: str) -> grpc.StatusCode:
    upper = _GO_CODE_NAMES.get(go_name) or re.sub(r"(?<!^)(?=[A-Z])", "_", go_name).upper()
    return grpc.StatusCode[upper]


@needs_etcd_source
def test_every_rpctypes_error_is_defined_with_etcds_code_and_message() -> None:
    source = (ETCD_SRC / "etcdserver" / "api" / "v3rpc" / "rpctypes" / "error.go").read_text()
    declared = re.findall(r'status\.New\(codes\.(\w+), "([^"]+)"\)', source)
    assert len(declared) > 50
    missing_or_wrong = [
        (message, go_code)
        for go_code, message in declared
        if (cls := errors.lookup(message)) is None or cls.code != _go_code_to_status(go_code)
    ]
    assert missing_or_wrong == []


def test_constants_are_raisable_catchable_and_carry_code_and_message() -> None:
    with pytest.raises(errors.COMPACTED) as caught:
        raise errors.COMPACTED
    assert caught.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert caught.value.message == "etcdserver: mvcc: required revision has been compacted"
    assert str(caught.value) == caught.value.message
    assert isinstance(caught.value, errors.EtcdError)
    assert errors.NO_LEADER() == errors.EtcdError(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")


def test_error_messages_are_unique() -> None:
    assert len({cls.message for cls in errors.ALL}) == len(errors.ALL)


def test_abort_and_from_rpc_error_round_trip_over_grpc() -> None:
    class FailingKV(rpc_pb2_grpc.KVServicer):
        async def Range(self, request: rpc_pb2.RangeRequest, context: grpc.aio.ServicerContext) -> None:  # type: ignore[override]
            if request.key == b"class":
                await errors.FUTURE_REV.abort(context)
            await errors.EtcdError(grpc.StatusCode.INTERNAL, "not an etcd error").abort(context)

    async def scenario() -> tuple[errors.EtcdError | None, errors.EtcdError | None]:
        server = grpc.aio.server()
        rpc_pb2_grpc.add_KVServicer_to_server(FailingKV(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = rpc_pb2_grpc.KVStub(channel)
                results = []
                for key in (b"class", b"other"):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await stub.Range(rpc_pb2.RangeRequest(key=key), timeout=5)
                    results.append(errors.from_rpc_error(caught.value))
                return results[0], results[1]
        finally:
            await server.stop(None)

    known, unknown = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert isinstance(known, errors.FUTURE_REV)
    assert known.code == grpc.StatusCode.OUT_OF_RANGE
    assert unknown is None


# ---------------------------------------------------------------- method names


def test_method_path_constants_cover_every_client_api_method() -> None:
    constants = {
        value
        for name, value in vars(grpc_names).items()
        if name.isupper() and isinstance(value, str) and value.startswith("/")
    }
    assert constants == set(grpc_names.METHODS)


def test_method_info_describes_streaming_shape_and_message_classes() -> None:
    watch = grpc_names.METHODS[grpc_names.WATCH]
    assert (watch.service, watch.method, watch.grpc_type) == ("etcdserverpb.Watch", "Watch", "bidi_stream")
    assert watch.request_class is rpc_pb2.WatchRequest
    assert grpc_names.METHODS[grpc_names.SNAPSHOT].grpc_type == "server_stream"
    assert grpc_names.METHODS[grpc_names.KV_RANGE].grpc_type == "unary"
    assert grpc_names.METHODS[grpc_names.LOCK_LOCK].response_class is v3lock_pb2.LockResponse
