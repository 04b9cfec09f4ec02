"""Process helpers shared by the benchmark scripts: free ports, starting replikv and
redis-server in their own sessions, waiting until they answer, and stopping exactly the
processes we started (by pid), also on Ctrl-C or SIGTERM.

Nothing here is imported by the product; it only drives it from the outside.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

_children: list[subprocess.Popen] = []
_tmpdirs: list[str] = []
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# environment for the replikv nodes we start (``use_source`` points PYTHONPATH at a snapshot)
NODE_ENV: dict[str, str] = dict(os.environ)


def _stop_all() -> None:
    while _children:
        stop(_children[-1])
    while _tmpdirs:
        shutil.rmtree(_tmpdirs.pop(), ignore_errors=True)


def _on_signal(signum, frame):  # SIGTERM / SIGHUP: unwind through finally blocks and atexit
    raise SystemExit(128 + signum)


atexit.register(_stop_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    try:
        signal.signal(_sig, _on_signal)
    except (ValueError, OSError):
        pass


def tmpdir(prefix: str) -> str:
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


def use_source(rev: str | None) -> str:
    """Run the nodes from ``git archive REV`` (a frozen copy, so edits in the work tree
    during a long run do not change what is measured) instead of the installed package.
    Returns a description of the code measured."""
    if not rev:
        try:
            desc = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            desc = "?"
        return f"installed package (work tree {desc or '?'})"
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", rev], capture_output=True, text=True,
                            timeout=10, check=True).stdout.strip()
    d = tmpdir("bench-src-")
    archive = subprocess.run(["git", "-C", REPO, "archive", commit, "replikv"], capture_output=True,
                             timeout=60, check=True).stdout
    subprocess.run(["tar", "-x", "-C", d], input=archive, check=True, timeout=60)
    NODE_ENV["PYTHONPATH"] = d + os.pathsep + NODE_ENV.get("PYTHONPATH", "")
    return f"git archive {commit} (rev {rev})"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(also: tuple[int, ...] = ()) -> int:
    """A free loopback port P such that P + each offset in ``also`` is free too
    (replikv uses P+10000 for peers and P+20000 for HTTP)."""
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + max(also, default=0) > 65535:
            # the ephemeral range is usually high: pick from a lower band instead
            p = 20000 + (p % 20000)
        if all(_port_free(p + off) for off in (0, *also)):
            return p
    raise RuntimeError("no free port found")


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start(cmd: list[str], port: int, log_path: str, ready_timeout: float = 20.0,
          env: dict | None = None) -> subprocess.Popen:
    """Start a server in its own session (so a Ctrl-C reaches only us) and wait for PONG."""
    log = open(log_path, "wb")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=env if env is not None else NODE_ENV)
    log.close()
    _children.append(p)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            stop(p)
            tail = open(log_path, "rb").read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{cmd[0]} exited with {p.returncode} at startup:\n{tail}")
        if _ping(port):
            return p
        time.sleep(0.05)
    stop(p)
    raise RuntimeError(f"{' '.join(cmd)} did not answer PING within {ready_timeout}s")


def stop(p: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; only this pid."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        except ProcessLookupError:
            pass
    if p in _children:
        _children.remove(p)


def replikv_cmd(port: int, data_dir: str, fsync: str, uvloop: bool = True,
                python: str | None = None, entry: list[str] | None = None) -> list[str]:
    """The command that runs one replikv node. ``entry`` replaces ``-m replikv`` (the
    profiling experiments run a patched entry point)."""
    cmd = [python or sys.executable] + (entry or ["-m", "replikv"])
    cmd += ["node", "--port", str(port), "--data-dir", data_dir, "--fsync", fsync, "--log-level", "warning"]
    if not uvloop:
        cmd.append("--no-uvloop")
    return cmd


def redis_cmd(port: int, data_dir: str, appendfsync: str) -> list[str]:
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
            "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
            "--daemonize", "no", "--protected-mode", "no", "--logfile", ""]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        sys.exit(f"{tool} not found: install redis-server and redis-tools (`make deps` does)")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def cpu_split(pid: int) -> tuple[float, float, int, int, float]:
    """(user seconds, system seconds, voluntary, involuntary context switches, seconds spent
    runnable but waiting for a core) of a process (all its threads) so far, from /proc
    (``/proc/PID/task/*/schedstat``: time on the CPU, time on a run queue, time slices);
    NaNs and zeros if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        user, system = int(f[11]) / tck, int(f[12]) / tck
        vol = invol = 0
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("voluntary_ctxt_switches"):
                    vol = int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol = int(line.split()[1])
        waited = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    waited += int(fh.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass    # a thread that ended meanwhile; or no schedstat (kernel without it)
        return user, system, vol, invol, waited / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan"), float("nan"), 0, 0, float("nan")


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def machine() -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": sys.version.split()[0],
            "platform": sys.platform}


def wait_for(cond, timeout: float, what: str):
    """Poll ``cond`` every 50 ms until it returns something true (returned); exceptions count
    as "not yet" (servers start, restart and go away here). RuntimeError after ``timeout``.
    (replikv.cluster.local.poll_until does the same; bench keeps its own copy because it
    also measures older revisions, `--rev`, which lack it.)"""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
            if last:
                return last
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
