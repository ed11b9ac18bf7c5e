"""Ingest as a real process (``herald run ingest``) on the session's infrastructure, with the real
sender beside it (ingest checks a webhook source's ``channel_id`` there: ``INGEST_SENDER_URL``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.processes import ServiceProcess, free_port, herald_cli, ingest_env
from tests.conftest import Infra


@pytest.fixture(scope="module")
def sender_process(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp = Path(tmp_path_factory.mktemp("ingest-e2e-sender"))
    service = ServiceProcess("sender", free_port(), infra.service_env(), tmp / "sender.log")
    service.start()
    try:
        service.wait_ready()
        yield service
    finally:
        service.terminate()


@pytest.fixture(scope="module")
def ingest_process(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory, sender_process: ServiceProcess
) -> Iterator[tuple[ServiceProcess, dict[str, str]]]:
    tmp = Path(tmp_path_factory.mktemp("ingest-e2e"))
    env = infra.service_env(
        INGEST_BLOB_DIR=str(tmp / "blobs"),
        HERALD_OUTBOX_POLL_SECONDS="0.5",
        # no pipeline in this suite: nothing listens there, an event of a tenant's own type is a 503
        **ingest_env(sender_process.port, pipeline_port=free_port()),
    )
    service = ServiceProcess("ingest", free_port(), env, tmp / "ingest.log")
    service.start()
    try:
        service.wait_ready()
        tenant = json.loads(herald_cli(env, "tenant", "create", f"ingest-e2e-{free_port()}", "--json"))
        yield service, tenant
    finally:
        service.terminate()
