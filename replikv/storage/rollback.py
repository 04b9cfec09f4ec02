"""Rolling a node's log back to a divergence point, keeping what is removed for the operator.

When an old leader (or a follower that had received its last records) rejoins a cluster
that elected a new leader, its log may hold records the new history does not have. They
are removed from the data, but never silently: each removed change is written to the
``lost-writes.jsonl`` file of the node's data dir (key, value, position, epoch, time) and
counted.

Blocking IO: call from the IO thread, with the node not serving the keyspace meanwhile.
"""

from __future__ import annotations

import json
import os
import time

from ..core.keyspace import EFFECT_NAMES
from .log import MAGIC, RecordLog, decode_payload, iter_frames

LOST_WRITES_FILE = "lost-writes.jsonl"


def _text(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, list):
        return [_text(x) for x in v]
    return v


def records_after(log: RecordLog, seq: int) -> list:
    out = []
    nxt = seq + 1
    while True:
        got = log.read_from(nxt, 4 << 20)
        if not got:
            return out
        for s, frame in got:
            out.append(decode_payload(frame[8:]))
            nxt = s + 1


def truncate_after(log: RecordLog, seq: int) -> None:
    """Cut the log so that its last record is ``seq`` (the log must be closed)."""
    for seg in reversed(list(log.segments)):
        if seg.first_seq > seq:
            try:
                os.unlink(seg.path)
            except FileNotFoundError:
                pass
            log.segments.remove(seg)
            continue
        with open(seg.path, "rb") as fh:
            data = fh.read()
        cut = len(MAGIC)
        for off, end, payload in iter_frames(data, len(MAGIC)):
            if payload is None:
                break
            if decode_payload(payload).seq > seq:
                cut = off
                break
            cut = end
        with open(seg.path, "r+b") as fh:
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
        seg.size = cut
        seg.last_seq = min(seg.last_seq, seq) if seg.last_seq else 0
        break
    log.last_seq = seq


def rollback(storage, seq: int, node_id: int, reason: str) -> int:
    """Roll ``storage`` back to ``seq``: write the removed changes to the lost-writes file,
    truncate the log, rebuild the keyspace from the snapshot and the log. Returns the number
    of records removed. The caller has checked ``storage.snapshot_seq <= seq``."""
    lost = records_after(storage.log, seq)
    path = os.path.join(storage.dir, LOST_WRITES_FILE)
    now = int(time.time() * 1000)
    with open(path, "a") as fh:
        for rec in lost:
            for eff in rec.effects:
                row = {"op": EFFECT_NAMES.get(eff[0], str(eff[0])), "key": _text(eff[1]) if len(eff) > 1 else None,
                       "value": _text(eff[2]) if len(eff) > 2 else None, "position": rec.seq, "epoch": rec.epoch,
                       "time": rec.ts_ms, "removed_at": now, "node": node_id, "reason": reason}
                if eff[0] == 0 and len(eff) > 3:
                    row["expire_at_ms"] = eff[3]
                fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    # the epoch history first: a kill between the two steps then leaves a history that
    # overstates its last epoch's range (the records above seq still there), which the
    # next leader's divergence check finds and rolls back again. The other order left a
    # history naming an epoch whose records were gone, so that the next epoch's records
    # were counted in the previous one's range and a later divergence went unseen.
    storage.meta["epochs"] = [h for h in storage.meta.data.get("epochs", []) if h[1] <= seq]
    storage.meta.save()
    storage.log.close()
    truncate_after(storage.log, seq)
    storage.meta["lost_records"] = int(storage.meta.data.get("lost_records", 0)) + len(lost)
    storage.meta.save()
    storage.ks.clear()
    storage.recover()
    return len(lost)
