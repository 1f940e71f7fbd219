"""Pull devices: the binary ZK protocol on port 4370 (see docs/protocols.md §B).

- :mod:`zkserver.pull.codec`: packets, datasets and records, pure;
- :mod:`zkserver.pull.protocol`: one session with a terminal (TCP or UDP);
- :mod:`zkserver.pull.service`, :mod:`zkserver.pull.manager`: one supervised service per
  device, and all of them (imported on their own: they need the store and the ingest).

Only the pure codec and the session are re-exported here, so that importing the codec never
pulls the services in.
"""

from zkserver.pull.codec import CodecError, Packet, PullRecord
from zkserver.pull.protocol import (
    AuthenticationFailed,
    DatasetUnreadable,
    SessionClosed,
    ZKError,
    ZKSession,
    open_session,
)

__all__ = [
    "AuthenticationFailed",
    "CodecError",
    "DatasetUnreadable",
    "Packet",
    "PullRecord",
    "SessionClosed",
    "ZKError",
    "ZKSession",
    "open_session",
]
