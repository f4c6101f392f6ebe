from cluster.api.gen.quorumpb import internal_pb2 as _internal_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RaftMessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MsgHup: _ClassVar[RaftMessageType]
    MsgBeat: _ClassVar[RaftMessageType]
    MsgProp: _ClassVar[RaftMessageType]
    MsgApp: _ClassVar[RaftMessageType]
    MsgAppResp: _ClassVar[RaftMessageType]
    MsgVote: _ClassVar[RaftMessageType]
    MsgVoteResp: _ClassVar[RaftMessageType]
    MsgSnap: _ClassVar[RaftMessageType]
    MsgHeartbeat: _ClassVar[RaftMessageType]
    MsgHeartbeatResp: _ClassVar[RaftMessageType]
    MsgUnreachable: _ClassVar[RaftMessageType]
    MsgSnapStatus: _ClassVar[RaftMessageType]
    MsgCheckQuorum: _ClassVar[RaftMessageType]
    MsgTransferLeader: _ClassVar[RaftMessageType]
    MsgTimeoutNow: _ClassVar[RaftMessageType]
    MsgReadIndex: _ClassVar[RaftMessageType]
    MsgReadIndexResp: _ClassVar[RaftMessageType]
    MsgPreVote: _ClassVar[RaftMessageType]
    MsgPreVoteResp: _ClassVar[RaftMessageType]

class RaftEntryType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EntryNormal: _ClassVar[RaftEntryType]
    EntryConfChange: _ClassVar[RaftEntryType]
MsgHup: RaftMessageType
MsgBeat: RaftMessageType
MsgProp: RaftMessageType
MsgApp: RaftMessageType
MsgAppResp: RaftMessageType
MsgVote: RaftMessageType
MsgVoteResp: RaftMessageType
MsgSnap: RaftMessageType
MsgHeartbeat: RaftMessageType
MsgHeartbeatResp: RaftMessageType
MsgUnreachable: RaftMessageType
MsgSnapStatus: RaftMessageType
MsgCheckQuorum: RaftMessageType
MsgTransferLeader: RaftMessageType
MsgTimeoutNow: RaftMessageType
MsgReadIndex: RaftMessageType
MsgReadIndexResp: RaftMessageType
MsgPreVote: RaftMessageType
MsgPreVoteResp: RaftMessageType
EntryNormal: RaftEntryType
EntryConfChange: RaftEntryType

class RaftEntry(_message.Message):
    __slots__ = ("term", "index", "type", "data")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    type: RaftEntryType
    data: bytes
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., type: _Optional[_Union[RaftEntryType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RaftHardState(_message.Message):
    __slots__ = ("term", "vote", "commit")
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    term: int
    vote: int
    commit: int
    def __init__(self, term: _Optional[int] = ..., vote: _Optional[int] = ..., commit: _Optional[int] = ...) -> None: ...

class RaftConfState(_message.Message):
    __slots__ = ("voters", "learners")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ...) -> None: ...

class RaftSnapshotMetadata(_message.Message):
    __slots__ = ("index", "term", "conf_state")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    CONF_STATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    conf_state: RaftConfState
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., conf_state: _Optional[_Union[RaftConfState, _Mapping]] = ...) -> None: ...

class RaftSnapshot(_message.Message):
    __slots__ = ("metadata", "data")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    metadata: RaftSnapshotMetadata
    data: bytes
    def __init__(self, metadata: _Optional[_Union[RaftSnapshotMetadata, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("type", "to_id", "from_id", "term", "log_term", "index", "commit", "reject", "reject_hint", "context", "snapshot", "entry_term", "entry_index", "entry_type", "entry_data")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TO_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_TERM_FIELD_NUMBER: _ClassVar[int]
    ENTRY_INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_DATA_FIELD_NUMBER: _ClassVar[int]
    type: RaftMessageType
    to_id: int
    from_id: int
    term: int
    log_term: int
    index: int
    commit: int
    reject: bool
    reject_hint: int
    context: bytes
    snapshot: RaftSnapshot
    entry_term: _containers.RepeatedScalarFieldContainer[int]
    entry_index: _containers.RepeatedScalarFieldContainer[int]
    entry_type: _containers.RepeatedScalarFieldContainer[int]
    entry_data: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, type: _Optional[_Union[RaftMessageType, str]] = ..., to_id: _Optional[int] = ..., from_id: _Optional[int] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., commit: _Optional[int] = ..., reject: _Optional[bool] = ..., reject_hint: _Optional[int] = ..., context: _Optional[bytes] = ..., snapshot: _Optional[_Union[RaftSnapshot, _Mapping]] = ..., entry_term: _Optional[_Iterable[int]] = ..., entry_index: _Optional[_Iterable[int]] = ..., entry_type: _Optional[_Iterable[int]] = ..., entry_data: _Optional[_Iterable[bytes]] = ...) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("cluster_id", "from_id", "to_id", "messages")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    TO_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    from_id: int
    to_id: int
    messages: _containers.RepeatedCompositeFieldContainer[RaftMessage]
    def __init__(self, cluster_id: _Optional[int] = ..., from_id: _Optional[int] = ..., to_id: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[RaftMessage, _Mapping]]] = ...) -> None: ...

class StreamAck(_message.Message):
    __slots__ = ("received_batches",)
    RECEIVED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    received_batches: int
    def __init__(self, received_batches: _Optional[int] = ...) -> None: ...

class SnapshotHeader(_message.Message):
    __slots__ = ("cluster_id", "from_id", "to_id", "message", "total_size")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    TO_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    from_id: int
    to_id: int
    message: RaftMessage
    total_size: int
    def __init__(self, cluster_id: _Optional[int] = ..., from_id: _Optional[int] = ..., to_id: _Optional[int] = ..., message: _Optional[_Union[RaftMessage, _Mapping]] = ..., total_size: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("header", "data", "sha256")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    header: SnapshotHeader
    data: bytes
    sha256: bytes
    def __init__(self, header: _Optional[_Union[SnapshotHeader, _Mapping]] = ..., data: _Optional[bytes] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("received_bytes",)
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    received_bytes: int
    def __init__(self, received_bytes: _Optional[int] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("cluster_id", "from_id")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    from_id: int
    def __init__(self, cluster_id: _Optional[int] = ..., from_id: _Optional[int] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("cluster_id", "member_id")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    member_id: int
    def __init__(self, cluster_id: _Optional[int] = ..., member_id: _Optional[int] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("cluster_id", "members", "removed")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    members: _containers.RepeatedCompositeFieldContainer[_internal_pb2.Member]
    removed: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, cluster_id: _Optional[int] = ..., members: _Optional[_Iterable[_Union[_internal_pb2.Member, _Mapping]]] = ..., removed: _Optional[_Iterable[int]] = ...) -> None: ...
