"""A first end-to-end check: a real node process answers redis-py in RESP3 and RESP2."""

from tests.conftest import client


def test_set_get_resp3_and_resp2(node):
    port = node.nodes[0].port
    r3 = client(port, protocol=3)
    assert r3.set("k", "v") is True
    assert r3.get("k") == b"v"
    r2 = client(port, protocol=2)
    assert r2.get("k") == b"v"
    assert r2.incr("n") == 1
    assert r3.incr("n") == 2
