"""The storage agent: its wire protocol, the Trio client and pool, and the supervisor of the C process.

Owns every byte of object data that goes to disk — through the C agent in ``native/``. Knows nothing of S3,
buckets or metadata.
"""

from .client import AgentConnection, AgentConnectionError, AgentPool, AgentTimeout, PutStream, open_agent_pool
from .protocol import AgentError, ProtocolError, Status

__all__ = [
    "AgentConnection",
    "AgentConnectionError",
    "AgentError",
    "AgentPool",
    "AgentTimeout",
    "ProtocolError",
    "PutStream",
    "Status",
    "open_agent_pool",
]
