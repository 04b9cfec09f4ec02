"""``replikv scenario list`` and ``replikv scenario run NAME [--dashboard]``."""

from __future__ import annotations

import json
import sys

import click

from ..cluster.cli import main


@main.group()
def scenario() -> None:
    """Scripted scenarios: an anomaly the seeds warn about, then the mechanism that prevents it."""


@scenario.command("list")
def list_scenarios() -> None:
    """The scenarios, in story order."""
    from . import all_scenarios

    for sc in all_scenarios():
        click.echo(f"{sc.name:<20} {sc.title}")
        click.echo(f"{'':<20} prevented by: {sc.mechanism}")


@scenario.command("run")
@click.argument("name")
@click.option("--dashboard", is_flag=True, help="Print the dashboard's URL (open it when there is a display) and "
              "pause between steps so they can be followed there; keep the last cluster until Enter.")
@click.option("--base-port", type=click.IntRange(1, 65000), default=7500, show_default=True,
              help="Ports of the scenario's cluster: RESP base+i-1, peers +100, HTTP +200, fault agent +399.")
@click.option("--pace", type=float, default=None, help="Seconds between steps (default 1.5 with --dashboard, else 0).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON at the end.")
def run_cmd(name, dashboard, base_port, pace, as_json) -> None:
    """Run scenario NAME (or `all`) on a fresh local cluster in a temp dir."""
    from . import Run, ScenarioError, all_scenarios, get, run_scenario

    try:
        names = [s.name for s in all_scenarios()] if name == "all" else [get(name).name]
    except KeyError as e:
        click.echo(f"replikv: {e.args[0]}", err=True)
        sys.exit(2)
    pace = pace if pace is not None else (1.5 if dashboard else 0.0)
    results = []
    for n in names:
        run = Run(base_port=base_port, dashboard=dashboard, pace=pace, out=click.echo)
        try:
            results.append(run_scenario(n, run, close=False))
            if dashboard and sys.stdin.isatty() and n == names[-1]:
                click.prompt("the last cluster still runs for the dashboard; press Enter to stop it",
                             default="", show_default=False, prompt_suffix=" ")
        except ScenarioError as e:
            click.echo(f"replikv: scenario {n} could not run: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        finally:
            run.close()
    if as_json:
        click.echo(json.dumps([{"name": r.name, "anomaly_seen_without": r.anomaly_seen_without,
                                "anomaly_seen_with": r.anomaly_seen_with, "details": r.details}
                               for r in results], indent=1, default=str))
    sys.exit(0 if all(r.shown for r in results) else 1)
