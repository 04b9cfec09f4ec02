"""A leader that steps down keeps its own log, possibly ending in records no follower
acknowledged. As a follower it would show readers its whole own log; until its start plan
with the next leader is done (the rollback of what that leader lacks), it shows no more
than it showed as leader (``Replication.visible_cap``, set by ``_become_follower``, lifted
by the welcome or a snapshot install)."""

from __future__ import annotations

import types

from replikv.server.replication import Replication


def shell(role: str, cap):
    r = object.__new__(Replication)
    r.role = role
    r.visible_cap = cap
    r.node = types.SimpleNamespace(advanced=0)
    r.node._advance_visible = lambda: setattr(r.node, "advanced", r.node.advanced + 1)
    return r


def test_a_capped_follower_shows_no_more_than_the_cap():
    r = shell("follower", 7)
    assert r.visible(12) == 7 and r.watermark_for(None, 12) == 7
    assert r.visible(5) == 5              # (below the cap: its own durable position)


def test_lifting_the_cap_shows_the_whole_log_and_moves_visibility_on():
    r = shell("follower", 7)
    r._lift_visible_cap()
    assert r.visible_cap is None and r.visible(12) == 12 and r.node.advanced == 1
    r._lift_visible_cap()                 # nothing to lift: no extra work
    assert r.node.advanced == 1


def test_no_cap_is_the_local_durable_position():
    r = shell("follower", None)
    assert r.visible(12) == 12
