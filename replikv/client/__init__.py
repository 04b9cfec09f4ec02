"""The replikv Python client: ``Client`` (sync), ``AsyncClient`` (asyncio) and ``Session``.

    from replikv.client import Client, Session
    c = Client(["127.0.0.1:7100", "127.0.0.1:7101"], session=Session(user_id="alice"))
    c.set("user:alice:name", "Alice")        # to the leader
    c.get("user:alice:name")                 # from a follower that has applied that write
    token = c.session.export()               # carry it to another device:
    Client([...], session=Session.resume(token))
"""

from .aio import AsyncClient
from .client import Client, NoLeader, OutcomeUnknown
from .session import Session

__all__ = ["AsyncClient", "Client", "NoLeader", "OutcomeUnknown", "Session"]
