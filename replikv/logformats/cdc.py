"""Change data capture: ``replikv cdc`` and the node's ``GET /cdc?from=SEQ`` endpoint.

``replikv cdc --data-dir DIR --from POS`` reads a node's log files (DIR is a node's data dir
or its ``log/`` directory); ``replikv cdc --node HOST:HTTP_PORT --from POS`` streams from a
running node, which answers with chunked JSON lines and keeps following new records as they
become visible there (committed, on a leader), like ``tail -f``. Either prints one JSON
object per change, in log order (see changes.py for the fields). Resuming: pass the last
position whose changes were all handled (``i == n - 1``) + 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from .changes import record_json_lines
from .reader import LogTailer, PositionGone

POLL_S = 0.05


def log_dir_of(path: str) -> str:
    sub = os.path.join(path, "log")
    return sub if os.path.isdir(sub) else path


# ---------------------------------------------------------------------------- the node's endpoint

def http_routes(node) -> list:
    async def cdc(request):
        return await cdc_handler(node, request)

    return [("GET", "/cdc", cdc)]


async def cdc_handler(node, request):
    from aiohttp import web

    try:
        nxt = int(request.query.get("from", "1"))
    except ValueError:
        return web.json_response({"error": "from: expected a position (an integer)"}, status=400)
    follow = request.query.get("follow", "1").lower() not in ("0", "false", "no")
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    tailer = LogTailer(os.path.join(node.config.data_dir, "log"))
    loop = asyncio.get_running_loop()
    nxt = max(nxt, 1)
    try:
        while True:
            limit = node.visible_seq        # committed (leader) / applied and durable (follower)
            recs = []
            if nxt <= limit and not node.loading:
                try:
                    recs = await loop.run_in_executor(None, tailer.read, nxt, limit, 1000)
                except PositionGone as e:
                    await resp.write((json.dumps({"error": str(e)}) + "\n").encode())
                    break
            if recs:
                await resp.write("".join(record_json_lines(r) for r in recs).encode())
                nxt = recs[-1].seq + 1
                continue
            if not follow:
                break
            await asyncio.sleep(POLL_S)
        await resp.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return resp


# ---------------------------------------------------------------------------- the CLI

def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_data_dir(data_dir: str, start: int, follow: bool) -> int:
    tailer = LogTailer(log_dir_of(data_dir))
    nxt = max(start, 1)
    while True:
        try:
            recs = tailer.read(nxt, None, 1000)
        except PositionGone as e:
            print(f"replikv cdc: {e}", file=sys.stderr)
            return 3
        if recs:
            _emit("".join(record_json_lines(r) for r in recs))
            nxt = recs[-1].seq + 1
            continue
        if not follow:
            return 0
        time.sleep(0.1)


def run_node(address: str, start: int, follow: bool) -> int:
    import urllib.error
    import urllib.request

    nxt = max(start, 1)
    backoff = 0.1
    while True:
        url = f"http://{address}/cdc?from={nxt}&follow={1 if follow else 0}"
        try:
            with urllib.request.urlopen(url, timeout=None) as r:
                backoff = 0.1
                pending: list[str] = []      # the lines of the record being received
                for raw in r:
                    line = raw.decode("utf-8")
                    obj = json.loads(line)
                    if "error" in obj:
                        print(f"replikv cdc: {obj['error']}", file=sys.stderr)
                        return 3
                    pending.append(line)
                    if obj["i"] == obj["n"] - 1:     # a record is printed whole or not at all
                        _emit("".join(pending))
                        pending = []
                        nxt = obj["pos"] + 1
            if not follow:
                return 0
        except (urllib.error.URLError, ConnectionError, OSError, ValueError) as e:
            if not follow:
                print(f"replikv cdc: {address}: {e}", file=sys.stderr)
                return 1
            print(f"replikv cdc: {address}: {e}; reconnecting from position {nxt}", file=sys.stderr)
        time.sleep(backoff)
        backoff = min(backoff * 2, 2.0)


def register(main) -> None:
    import click

    @main.command("cdc")
    @click.option("--data-dir", type=click.Path(file_okay=False), help="Read a node's log files (its data dir).")
    @click.option("--node", "node_addr", metavar="HOST:PORT", help="Stream from a running node's HTTP address.")
    @click.option("--from", "start", type=int, default=1, show_default=True,
                  help="First position to print (resume: the last position handled completely + 1).")
    @click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
    @click.option("--follow/--no-follow", default=None,
                  help="Keep printing new changes as they come (default: yes with --node, no with --data-dir).")
    def cdc(data_dir, node_addr, start, fmt, follow) -> None:
        """Print the changes of the log, one JSON object per line, in order, from a position."""
        if bool(data_dir) == bool(node_addr):
            click.echo("replikv cdc: give exactly one of --data-dir DIR or --node HOST:PORT", err=True)
            sys.exit(2)
        try:
            if data_dir:
                code = run_data_dir(data_dir, start, bool(follow))
            else:
                code = run_node(node_addr, start, True if follow is None else follow)
        except KeyboardInterrupt:
            code = 130
        except BrokenPipeError:
            code = 0
        sys.exit(code)
