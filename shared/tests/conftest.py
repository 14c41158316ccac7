"""Reporting for the shared tests: how many hypothesis examples each conformance property ran."""

from __future__ import annotations

from collections import Counter

import pytest

EXAMPLE_TALLY = pytest.StashKey[Counter[str]]()


@pytest.fixture(scope="session")
def example_tally(request: pytest.FixtureRequest) -> Counter[str]:
    """A session-wide counter of examples run, keyed by property; summarised at the end of the run."""
    return request.config.stash.setdefault(EXAMPLE_TALLY, Counter())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    tally = config.stash.get(EXAMPLE_TALLY, None)
    if not tally:
        return
    terminalreporter.section("A2A model conformance: hypothesis examples run")
    width = max(len(name) for name in tally)
    for name, count in sorted(tally.items()):
        terminalreporter.write_line(f"{name:<{width}}  {count:6d}")
    terminalreporter.write_line(f"{'total':<{width}}  {sum(tally.values()):6d}")
