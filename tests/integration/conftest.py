"""Fixtures for integration tests against the real servers (no mocks).

One Temporal dev server and one pulsar-lite broker are started per test session,
on free ports, with their state in a pytest tmp dir, and stopped by PID at the end
(and, should pytest itself be killed before teardown, by the kernel: die_with_parent).

Async code: pytest-asyncio is not a dependency. Tests are plain sync functions
that drive coroutines with the session's `aio` runner (`aio.run(coro)`), i.e.
`asyncio.run` on one event loop shared by the session, so the session-scoped
Temporal client is always used on the loop it was created on.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from timeline.runtime.stack import ServerProcess, start_pulsar, start_temporal

# Deadlines are written for an idle machine; a shared 2-core box under load runs these
# servers several times slower. A wait ends as soon as its condition holds, so a longer
# deadline only delays the report of a real failure (TIMELINE_TEST_PATIENCE=1: as written).
PATIENCE = float(os.environ.get("TIMELINE_TEST_PATIENCE", "4"))
MAX_SCALED_WAIT_S = 600.0  # scaling never makes one wait longer than this (a test's own longer deadline stays)


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 30,
    interval: float = 0.1,
    message: str = "condition",
) -> object:
    """Poll `predicate` until it returns something truthy, and return that value.

    Exceptions from the predicate count as "not yet"; the last one is shown if
    the wait times out, so a failing test says what it was waiting for and why.
    """
    timeout = min(timeout * PATIENCE, max(timeout, MAX_SCALED_WAIT_S))
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{detail}")
        time.sleep(interval)


@pytest.fixture(name="wait_for", scope="session")
def wait_for_fixture() -> Callable[..., object]:
    """`wait_for` as a fixture: test modules should not import from conftest."""
    return wait_for


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def temporal_server(stack_dir: Path) -> Iterator[ServerProcess]:
    server = start_temporal(stack_dir / "temporal", die_with_parent=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pulsar_server(stack_dir: Path) -> Iterator[ServerProcess]:
    server = start_pulsar(stack_dir / "pulsar", die_with_parent=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pulsar_url(pulsar_server: ServerProcess) -> str:
    return pulsar_server.address


@pytest.fixture(scope="session")
def aio() -> Iterator[asyncio.Runner]:
    """One event loop for the session: `aio.run(coro)` inside a plain sync test."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(scope="session")
def temporal_client(temporal_server: ServerProcess, aio: asyncio.Runner) -> Client:
    return aio.run(Client.connect(temporal_server.address))
