"""`replikv check` end to end (MISSION V1 + V2): a fresh cluster, a workload, a nemesis,
healing, and the checkers' verdicts on the recorded history. Each run is short; together
they show that a guarantee holds where replikv promises it, and that the checker finds the
violation where it does not."""

import json
import subprocess
import sys

from tests.conftest import free_base_port


def run_check(*args, time_s=10):
    base = free_base_port(3)
    cmd = [sys.executable, "-m", "replikv", "check", "--time", str(time_s), "--clients", "4",
           "--base-port", str(base), "--seed", "7", "--json", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.stdout.strip(), p.stderr[-3000:]
    report = json.loads(p.stdout)
    verdicts = {c["checker"]: c["verdict"] for c in report["checks"]}
    return p.returncode, verdicts, report


def test_semi_sync_majority_survives_kills_partitions_and_pauses():
    code, v, report = run_check("--ack", "semi-sync:1", "--nemesis", "kill,partition,pause", time_s=15)
    assert v["linearizability"] == "ok", report
    assert v["lost-writes"] == "ok"
    assert v["convergence"] == "ok"
    assert code == 0


def test_async_failover_loses_acknowledged_writes_and_the_checker_finds_them():
    code, v, report = run_check("--ack", "async", "--nemesis", "kill-lagging", time_s=12)
    assert v["lost-writes"] == "violation", v
    assert v["convergence"] == "ok"   # the old leader rolled its extra writes back
    assert code == 1


def test_follower_reads_without_guarantees_violate_ryw_and_monotonic_reads():
    code, v, _ = run_check("--ack", "async", "--nemesis", "", "--reads", "followers", "--no-guarantees",
                           "--follower-delay-ms", "0,700", time_s=8)
    assert v["read-your-writes"] == "violation"
    assert v["monotonic-reads"] == "violation"
    assert code == 1


def test_follower_reads_with_session_guarantees_have_no_violation():
    code, v, _ = run_check("--ack", "async", "--nemesis", "", "--reads", "followers", "--guarantees",
                           "--follower-delay-ms", "0,700", time_s=8)
    assert v["read-your-writes"] == "ok"
    assert v["monotonic-reads"] == "ok"
    assert code == 0
