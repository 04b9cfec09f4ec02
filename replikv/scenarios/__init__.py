"""Scenarios: each one makes an anomaly the seed notes warn about happen on a fresh local
cluster of real node processes, shows it, then runs the same steps again with the mechanism
that prevents it and shows it prevented.

  replikv scenario list
  replikv scenario run NAME [--dashboard]

Adding a scenario: put a module in this package (any name not starting with ``_``, other
than ``cli``) with a function decorated by ``@scenario(...)`` that takes a ``Run`` and
returns a ``Result``::

    from ._base import Result, Run, scenario

    @scenario("causality", title="...", seeds="what the seeds say ...",
              mechanism="what prevents it", order=70)
    def causality(run: Run) -> Result:
        cl = run.cluster(3, ack="async")
        ...
        return Result("causality", anomaly_seen_without=..., anomaly_seen_with=..., details={...})

It is found automatically: the CLI lists and runs it and tests/scenarios/test_scenarios.py
asserts it (the anomaly without the mechanism, none with it). Keep it to seconds.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._base import SCENARIOS, Result, Run, Scenario, ScenarioError, scenario

__all__ = ["SCENARIOS", "Result", "Run", "Scenario", "ScenarioError", "all_scenarios", "get", "run_scenario",
           "scenario"]

_loaded = False


def _discover() -> None:
    global _loaded
    if _loaded:
        return
    for m in pkgutil.iter_modules(__path__):
        if not m.name.startswith("_") and m.name != "cli":
            importlib.import_module(f"{__name__}.{m.name}")
    _loaded = True


def all_scenarios() -> list[Scenario]:
    _discover()
    return sorted(SCENARIOS.values(), key=lambda s: (s.order, s.name))


def get(name: str) -> Scenario:
    _discover()
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"no scenario {name!r}; try: {', '.join(s.name for s in all_scenarios())}") from None


def run_scenario(name: str, run: Run | None = None, close: bool = True) -> Result:
    """Run one scenario with its narrative; its clusters are removed afterwards unless
    ``close`` is False (the caller then calls ``run.close()``)."""
    sc = get(name)
    run = run or Run()
    run.heading(f"== {sc.name}: {sc.title}")
    run.say("What the seeds say: " + sc.seeds)
    run.say("The mechanism: " + sc.mechanism)
    try:
        result = sc.fn(run)
    finally:
        if close:
            run.close()
    run.heading(f"-- {sc.name}: anomaly without the mechanism: {'SEEN' if result.anomaly_seen_without else 'not seen'}; "
                f"with it: {'SEEN' if result.anomaly_seen_with else 'prevented'}"
                + ("" if result.shown else "  (NOT AS EXPECTED)"))
    return result
