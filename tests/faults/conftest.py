"""The long fault suite's fleet (``make test-faults``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Infra
from tests.faults.harness import Fleet, fleet_fixture


@pytest.fixture(scope="module")
def fleet(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield from fleet_fixture(infra, Path(tmp_path_factory.mktemp("fleet")))
