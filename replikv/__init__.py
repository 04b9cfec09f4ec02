"""replikv: a replicated key-value database speaking the Redis protocol.

Layers (see docs/architecture.md):
  replikv.core     sans-IO: RESP codec, keyspace and effects, commands, replication state machines
  replikv.storage  the durable log (segments, checksums, fsync), snapshots, recovery
  replikv.server   the asyncio node: client and peer sockets, HTTP status and metrics
  replikv.client   the Python client with session guarantees
  replikv.cluster  local clusters, the CLI, fault injection
"""

__version__ = "0.1.0"
