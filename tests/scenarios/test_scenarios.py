"""Every scenario on real node processes: the anomaly shows without the mechanism, and not
with it (MISSION V5). Scenarios are found by discovery, so one added later is tested here."""

from __future__ import annotations

import itertools

import pytest
from click.testing import CliRunner

from replikv.cluster.cli import main
from replikv.scenarios import Run, all_scenarios, run_scenario
from replikv.scenarios._base import free_base_port

NAMES = [s.name for s in all_scenarios()]
_ports = itertools.count()


def test_the_seed_scenarios_are_registered():
    assert {"stale-read", "time-backwards", "lost-writes", "split-brain", "new-follower", "follower-crash",
            "semi-sync-fallback"} <= set(NAMES)
    for sc in all_scenarios():
        assert sc.title and sc.seeds and sc.mechanism


def test_cli_lists_scenarios_and_refuses_unknown_ones():
    r = CliRunner().invoke(main, ["scenario", "list"])
    assert r.exit_code == 0, r.output
    for name in NAMES:
        assert name in r.output
    r = CliRunner().invoke(main, ["scenario", "run", "no-such-scenario"])
    assert r.exit_code == 2
    assert "no scenario 'no-such-scenario'" in r.output


@pytest.mark.parametrize("name", NAMES)
def test_scenario_shows_the_anomaly_then_prevents_it(name, tmp_path):
    lines: list[str] = []
    base = free_base_port(start=21000 + 500 * next(_ports))
    run = Run(base_port=base, out=lines.append, root=str(tmp_path / "run"))
    result = run_scenario(name, run)
    story = "\n".join(lines)
    print(story)
    assert result.name == name
    assert result.anomaly_seen_without, f"the anomaly did not show without the mechanism:\n{story}"
    assert not result.anomaly_seen_with, f"the anomaly showed despite the mechanism:\n{story}"
    assert "What the seeds say" in story
    assert not run.clusters, "the scenario's clusters were not stopped"
