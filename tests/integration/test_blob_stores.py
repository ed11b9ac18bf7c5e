"""The three blob stores behind one interface, each against a server that speaks its real API:
a folder; S3 through aiobotocore against moto's server (the S3 REST API over HTTP, as MinIO or
AWS would answer it); Google Cloud Storage through gcloud-aio-storage against
gcp-storage-emulator (the GCS JSON API, found through ``STORAGE_EMULATOR_HOST`` as the library
does in production tooling).

What a user notices: media stored under one prefix per user come back byte for byte, and erasing
a user (``DELETE /v1/users/{id}/data`` calls ``delete_prefix``) removes that user's media and only
theirs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devtools.processes import free_port
from services.ingest.blobs import BlobStore, GcsBlobStore, LocalBlobStore, S3BlobStore

BUCKET = "herald-media"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3", "gcs"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[BlobStore]:
    blobs: BlobStore
    if request.param == "local":
        blobs = LocalBlobStore(tmp_path / "blobs")
    elif request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "herald-test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "herald-test")
        from aiobotocore.session import get_session

        async with get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1"
        ) as client:
            buckets = [b["Name"] for b in (await client.list_buckets()).get("Buckets", [])]
            if BUCKET not in buckets:
                await client.create_bucket(Bucket=BUCKET)
        blobs = S3BlobStore(BUCKET, "herald/", endpoint_url=endpoint, region="us-east-1")
    else:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", request.getfixturevalue("gcs_endpoint"))
        blobs = GcsBlobStore(BUCKET, "herald/")
    try:
        yield blobs
    finally:
        await blobs.close()


async def test_media_come_back_byte_for_byte_and_erasing_a_user_removes_only_theirs(store: BlobStore):
    run = os.urandom(4).hex()
    ana = f"tenant-{run}/u-ana"
    rui = f"tenant-{run}/u-rui"
    voice = os.urandom(70_000)  # binary, not text: nothing may be re-encoded on the way
    photo = b"\xff\xd8\xff\xe0" + os.urandom(5_000)
    await store.put(f"{ana}/wamid.1.ogg", voice, "audio/ogg")
    await store.put(f"{ana}/2026/wamid.2.jpg", photo, "image/jpeg")
    await store.put(f"{rui}/wamid.3.jpg", photo, "image/jpeg")

    assert await store.get(f"{ana}/wamid.1.ogg") == voice
    assert await store.get(f"{ana}/2026/wamid.2.jpg") == photo

    assert await store.delete_prefix(ana) == 2
    for key in (f"{ana}/wamid.1.ogg", f"{ana}/2026/wamid.2.jpg"):
        with pytest.raises(Exception):  # noqa: B017 - each store raises its own "not found"
            await store.get(key)
    assert await store.get(f"{rui}/wamid.3.jpg") == photo
    assert await store.delete_prefix(ana) == 0  # erasing twice is harmless

    # a prefix is a whole path segment: erasing u-rui must not touch u-rui2
    await store.put(f"tenant-{run}/u-rui2/wamid.4.jpg", photo, "image/jpeg")
    assert await store.delete_prefix(rui) == 1
    assert await store.get(f"tenant-{run}/u-rui2/wamid.4.jpg") == photo

    # one blob (a download that finished after its user was erased)
    await store.delete(f"tenant-{run}/u-rui2/wamid.4.jpg")
    with pytest.raises(Exception):  # noqa: B017
        await store.get(f"tenant-{run}/u-rui2/wamid.4.jpg")
    await store.delete(f"tenant-{run}/u-rui2/wamid.4.jpg")  # already gone: no error


async def test_a_key_that_climbs_out_of_its_prefix_is_refused(store: BlobStore):
    for key in ("../other-tenant/x", "tenant/u-ana/../../x", ""):
        with pytest.raises(ValueError):
            await store.put(key, b"x", "text/plain")
