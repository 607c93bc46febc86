"""Project-wide test rules.

The `e2e` marker: a test that needs root and the installed testbed (containerd with NRI, runc,
crictl, fanotify). Everything under tests/e2e/ gets the marker automatically. When a prerequisite
is missing, the test FAILS with the reason if CI=true, and is skipped with the reason otherwise.
Under CI=true no test skips at all: any skip is reported as a failure with its reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_E2E_DIR = Path(__file__).parent / "e2e"
_MISSING_IN_CI = pytest.StashKey[str]()


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def e2e_missing_prerequisite() -> str | None:
    """Why e2e tests cannot run here, or None when they can."""
    from testbed.paths import MissingPrerequisite, check_prerequisites

    try:
        check_prerequisites()
    except MissingPrerequisite as exc:
        return str(exc)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # A hook, not a fixture: it runs before any fixture of the item, session-scoped ones (the
    # shared testbed) included, so a missing prerequisite is reported as itself.
    if item.get_closest_marker("e2e") is None:
        return
    reason = e2e_missing_prerequisite()
    if reason is None:
        return
    if running_in_ci():
        item.stash[_MISSING_IN_CI] = reason
        pytest.fail(f"e2e prerequisite missing (CI=true, so this fails): {reason}",
                    pytrace=False)
    pytest.skip(f"e2e prerequisite missing: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    # A failure raised during setup would show as ERROR; report it as the test's own FAILURE.
    if call.when == "setup" and report.failed and _MISSING_IN_CI in item.stash:
        report.when = "call"
    # CI runs every test: any other skip there (pytest.skip, importorskip, a skip marker) would hide
    # a broken set-up behind a green run, so it fails with its reason.
    if report.skipped and running_in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.when = "call"
        report.longrepr = f"skipped under CI=true, so this fails: {reason}"
