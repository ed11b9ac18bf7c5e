"""The short form of the fault suite (issue 14 §1) inside ``make test``: the most telling faults,
each under a few hundred mixed items, on the same fleet as the long form (tests/faults/,
``make test-faults``): 2× ingest, 2× pipeline, 2× sender, 1× scheduler."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.processes import REPO
from tests.conftest import Infra
from tests.faults.harness import (
    Fault,
    Fleet,
    Row,
    check,
    fleet_fixture,
    kill,
    model,
    nothing,
    provider_calm,
    provider_chaos,
    restart,
    run_fault,
    write_table,
)

pytestmark = pytest.mark.e2e
FAULTS = [
    Fault("SIGKILL sender-0", kill("sender", 0), nothing, opens_crash_window=True),
    Fault("SIGKILL both pipeline", kill("pipeline", 0, 1), nothing),
    Fault("RabbitMQ restart", restart("stop_broker", "start_broker"), nothing, opens_crash_window=True),
    Fault("PostgreSQL restart", restart("stop_database", "start_database"), nothing, opens_crash_window=True),
    Fault("provider 30% 5xx/429 + 5% timeouts", provider_chaos(0.3, 0.05), provider_calm, hold=5.0),
    Fault("model malformed JSON", model("malformed"), model("ok"), hold=5.0),
]
ROWS: list[Row] = []


@pytest.fixture(scope="module")
def fleet(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield from fleet_fixture(infra, Path(tmp_path_factory.mktemp("fleet")))


@pytest.fixture(scope="module", autouse=True)
def fault_table(request: pytest.FixtureRequest):
    yield
    if ROWS:
        write_table(
            ROWS, REPO / ".herald" / "artifacts" / "faults-short.md", "Faults (short form)", request.config
        )


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fleet: Fleet, fault: Fault) -> None:
    if fleet.infra.handle is None and ("RabbitMQ" in fault.name or "PostgreSQL" in fault.name):
        pytest.skip("this run's broker and database come from URLs: it cannot stop them")
    row, out, _ = run_fault(fleet, fault, items=150, rate=30, settle_timeout=120)
    ROWS.append(row)
    check(row, out)
