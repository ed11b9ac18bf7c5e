"""The long fault suite (issue 14 §1; ``make test-faults``): every fault of the issue in turn, each
under a mixed load of about a thousand items, on a fleet of 2× ingest, 2× pipeline, 2× sender and
1× scheduler. The table is printed at the end and written to .herald/artifacts/faults.md."""

from __future__ import annotations

import pytest

from devtools.processes import REPO
from tests.faults.harness import Fault, Fleet, Row, all_faults, check, run_fault, write_table

pytestmark = pytest.mark.faults
FAULTS = all_faults(outage=30.0, provider_hold=20.0)
ROWS: list[Row] = []


@pytest.fixture(scope="module", autouse=True)
def fault_table(request: pytest.FixtureRequest):
    yield
    if ROWS:
        write_table(ROWS, REPO / ".herald" / "artifacts" / "faults.md", "Faults (long form)", request.config)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fleet: Fleet, fault: Fault) -> None:
    if fleet.infra.handle is None and ("RabbitMQ" in fault.name or "PostgreSQL" in fault.name):
        pytest.skip("this run's broker and database come from URLs: it cannot stop them")
    row, out, _ = run_fault(fleet, fault, items=1000, rate=30, settle_timeout=300)
    ROWS.append(row)
    check(row, out)
