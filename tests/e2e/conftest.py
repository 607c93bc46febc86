"""Fixtures for tests against a real containerd (see testbed/containerd.py).

- `testbed`: one Testbed for the whole session, torn down at the end. Every test that uses it
  gets its pods removed afterwards (autouse `_clean_testbed_pods`), so tests stay independent.
- `fresh_testbed`: a Testbed of its own for one test (e.g. one that kills containerd).
- `testbed_factory`: make Testbeds with custom arguments (config_patch, images); all are torn down
  after the test.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import pytest

from testbed.containerd import Testbed, reap_stale_instances

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def testbed(request: pytest.FixtureRequest) -> Iterator[Testbed]:
    # Prerequisites were checked by tests/conftest.py (pytest_runtest_setup) before this runs.
    reap_stale_instances()  # what a killed earlier session left behind
    tb = Testbed().up()
    try:
        yield tb
    finally:
        tb.down()


@pytest.fixture(autouse=True)
def _clean_testbed_pods(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "testbed" not in request.fixturenames:
        return
    tb: Testbed = request.getfixturevalue("testbed")
    if tb.containerd_pid is None:
        # A test killed the shared containerd: bring it back for the next tests.
        log.warning("shared testbed containerd not running after test; restarting")
        tb.start_containerd()
    tb.remove_all_pods()


@pytest.fixture
def testbed_factory() -> Iterator[Callable[..., Testbed]]:
    made: list[Testbed] = []

    def make(**kwargs: Any) -> Testbed:
        tb = Testbed(**kwargs)
        made.append(tb)
        return tb.up()

    yield make
    for tb in reversed(made):
        tb.down()


@pytest.fixture
def fresh_testbed(testbed_factory: Callable[..., Testbed]) -> Testbed:
    return testbed_factory()
