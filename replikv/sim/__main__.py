"""``python -m replikv.sim``: run many seeds, or replay one with a trace."""

from __future__ import annotations

import sys
import time

import click

from .cluster import run_seed


@click.command()
@click.option("--seed", type=int, default=None, help="Replay one seed.")
@click.option("--seeds", type=int, default=200, show_default=True, help="How many seeds to run.")
@click.option("--start", type=int, default=0, show_default=True, help="First seed.")
@click.option("--planted-bug", default="", help="ignore-log-freshness: elections ignore how fresh a log is.")
@click.option("--policy", default="semi-sync:1:strict", show_default=True)
@click.option("--nodes", type=int, default=3, show_default=True)
@click.option("--trace", is_flag=True, help="Print every event of the replayed seed.")
def main(seed, seeds, start, planted_bug, policy, nodes, trace) -> None:
    """Deterministic simulation of replikv's single-leader replication with failover."""
    bug = f" --planted-bug {planted_bug}" if planted_bug else ""
    if seed is not None:
        ok, why, sim = run_seed(seed, planted_bug, trace=True, policy=policy, nodes=nodes)
        if trace:
            print("\n".join(sim.lines))
        print(f"seed {seed}: {'ok' if ok else 'VIOLATION: ' + why}  {sim.stats}")
        sys.exit(0 if ok else 1)
    t = time.perf_counter()
    failures = []
    for s in range(start, start + seeds):
        ok, why, _ = run_seed(s, planted_bug, policy=policy, nodes=nodes)
        if not ok:
            failures.append((s, why))
            print(f"seed {s}: VIOLATION: {why}\n  replay: python -m replikv.sim --seed {s}{bug} --trace")
    print(f"{seeds} seeds in {time.perf_counter() - t:.1f}s: {len(failures)} violation(s)")
    sys.exit(1 if failures else 0)


main()
