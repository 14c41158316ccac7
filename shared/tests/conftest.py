"""Reporting for the shared tests: how many hypothesis examples each conformance property and each bad-input
(parser) property ran."""

from __future__ import annotations

from collections import Counter

import pytest

EXAMPLE_TALLY = pytest.StashKey[Counter[str]]()
PARSER_TALLY = pytest.StashKey[Counter[str]]()


@pytest.fixture(scope="session")
def example_tally(request: pytest.FixtureRequest) -> Counter[str]:
    """A session-wide counter of examples run, keyed by property; summarised at the end of the run."""
    return request.config.stash.setdefault(EXAMPLE_TALLY, Counter())


@pytest.fixture(scope="session")
def parser_tally(request: pytest.FixtureRequest) -> Counter[str]:
    """A session-wide counter of bad inputs tried, keyed by parser property; summarised at the end of the run."""
    return request.config.stash.setdefault(PARSER_TALLY, Counter())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    sections = (
        (EXAMPLE_TALLY, "A2A model conformance: hypothesis examples run"),
        (PARSER_TALLY, "Bad input: hypothesis examples run per parser property"),
    )
    for key, title in sections:
        tally = config.stash.get(key, None)
        if not tally:
            continue
        terminalreporter.section(title)
        width = max(len(name) for name in [*tally, "total"])
        for name, count in sorted(tally.items()):
            terminalreporter.write_line(f"{name:<{width}}  {count:6d}")
        terminalreporter.write_line(f"{'total':<{width}}  {sum(tally.values()):6d}")
