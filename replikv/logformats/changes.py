"""Per-key changes of a log record, for change data capture and triggers.

A record carrying row images (``log_format = "row"``, or trigger images) gives after-images:
``put`` (key, type, value, expire_at), ``del``, ``flush``. Any other record gives changes
derived from its effects: ``set`` (value, expire_at), ``del``, ``expire`` (expire_at, 0 =
persist), ``hset`` (value: fields -> values), ``hdel`` (fields), ``sadd`` / ``srem``
(members), ``append`` (value: the bytes appended), ``rename`` (key -> to), ``flush``.

Positions: a change's position is its record's position (``pos``); the changes of one
record (an MSET, a MULTI/EXEC) share it and are numbered ``i`` of ``n``. A consumer that
resumes from the last position it handled completely + 1 sees every change exactly once.
"""

from __future__ import annotations

import base64
import json

from ..core.keyspace import (
    E_APPEND,
    E_DEL,
    E_EXPIRE,
    E_FLUSH,
    E_HDEL,
    E_HSET,
    E_PUT,
    E_RENAME,
    E_SADD,
    E_SET,
    E_SREM,
    T_HASH,
    T_SET,
    TYPE_NAMES,
    value_from_wire,
)
from .formats import repl_kind


def image_changes(images: list) -> list[dict]:
    out = []
    for img in images:
        if len(img) == 1:
            out.append({"op": "flush"})
        elif img[1] is None:
            out.append({"op": "del", "key": img[0]})
        else:
            out.append({"op": "put", "key": img[0], "type": TYPE_NAMES.get(img[1], str(img[1])),
                        "value": value_from_wire(img[1], img[2]), "expire_at": img[3]})
    return out


def effect_changes(effects: list) -> list[dict]:
    out = []
    for e in effects:
        op = e[0]
        if op == E_SET:
            out.append({"op": "set", "key": e[1], "value": e[2], "expire_at": e[3]})
        elif op == E_DEL:
            out.append({"op": "del", "key": e[1]})
        elif op == E_EXPIRE:
            out.append({"op": "expire", "key": e[1], "expire_at": e[2]})
        elif op == E_HSET:
            out.append({"op": "hset", "key": e[1], "value": dict(zip(e[2][::2], e[2][1::2], strict=True))})
        elif op == E_HDEL:
            out.append({"op": "hdel", "key": e[1], "fields": list(e[2])})
        elif op == E_SADD:
            out.append({"op": "sadd", "key": e[1], "members": list(e[2])})
        elif op == E_SREM:
            out.append({"op": "srem", "key": e[1], "members": list(e[2])})
        elif op == E_APPEND:
            out.append({"op": "append", "key": e[1], "value": e[2]})
        elif op == E_RENAME:
            out.append({"op": "rename", "key": e[1], "to": e[2]})
        elif op == E_FLUSH:
            out.append({"op": "flush"})
        elif op == E_PUT:
            out += image_changes([e[1:]])
        # E_META (replication metadata) is not a change of the data
    return out


def record_changes(rec) -> list[dict]:
    """All changes of a storage-log record (row images when it has them, else its effects)."""
    if rec.repl is not None and repl_kind(rec.repl) == "row":
        return image_changes(rec.repl)
    return effect_changes(rec.effects)


def record_images(rec):
    """The after-images a record carries (row format, or trigger images), else None."""
    if rec.images is not None:
        return rec.images
    if rec.repl is not None and repl_kind(rec.repl) == "row":
        return rec.repl
    return None


# ---------------------------------------------------------------------------- JSON

def _is_text(v) -> bool:
    if isinstance(v, bytes):
        try:
            v.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False
    if isinstance(v, dict):
        return all(_is_text(k) and _is_text(x) for k, x in v.items())
    if isinstance(v, (list, set, tuple)):
        return all(_is_text(x) for x in v)
    return True


def _enc(v, b64: bool):
    if isinstance(v, bytes):
        return base64.b64encode(v).decode() if b64 else v.decode("utf-8")
    if isinstance(v, dict):
        return {_enc(k, b64): _enc(x, b64) for k, x in v.items()}
    if isinstance(v, set):
        return sorted(_enc(x, b64) for x in v)
    if isinstance(v, (list, tuple)):
        return [_enc(x, b64) for x in v]
    return v


def change_json(rec, i: int, n: int, ch: dict) -> dict:
    """One change as a JSON object: ``pos``, ``i``, ``n``, ``epoch``, ``ts_ms``, the change's
    fields; byte strings as UTF-8 text, or all of them base64 with ``"enc": "base64"``."""
    b64 = not _is_text(ch)
    out = {"pos": rec.seq, "i": i, "n": n, "epoch": rec.epoch, "ts_ms": rec.ts_ms}
    for k, v in ch.items():
        out[k] = _enc(v, b64)
    if b64:
        out["enc"] = "base64"
    return out


def record_json_lines(rec) -> str:
    chs = record_changes(rec)
    n = len(chs)
    return "".join(json.dumps(change_json(rec, i, n, ch), separators=(",", ":")) + "\n"
                   for i, ch in enumerate(chs))


__all__ = ["record_changes", "record_images", "record_json_lines", "image_changes", "effect_changes",
           "change_json", "T_HASH", "T_SET"]
