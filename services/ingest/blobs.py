"""Blob stores for inbound media, behind one interface.

Keys are ``<tenant id>/<user prefix>/<name>``: one prefix per user, so ``delete_prefix`` erases
everything of one user in one call. ``LocalBlobStore`` (the default) keeps files under a folder;
``S3BlobStore`` (extra ``s3``: aiobotocore) and ``GcsBlobStore`` (extra ``gcs``:
gcloud-aio-storage) keep objects in a bucket. ``tests/integration/test_blob_stores.py`` runs all
three, S3 against moto's server and GCS against gcp-storage-emulator.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None: ...
    async def get(self, key: str) -> bytes: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def close(self) -> None: ...


def _safe(key: str) -> str:
    parts = [p for p in key.split("/") if p]
    if any(p in (".", "..") for p in parts) or not parts:
        raise ValueError(f"invalid blob key {key!r}")
    return "/".join(parts)


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _safe(key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)

        await asyncio.to_thread(write)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def delete_prefix(self, prefix: str) -> int:
        path = self._path(prefix)

        def remove() -> int:
            if not path.exists():
                return 0
            count = sum(1 for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
            return count

        return await asyncio.to_thread(remove)

    async def close(self) -> None:
        return None


class S3BlobStore:
    """Amazon S3 or any S3-compatible store (MinIO, R2) through aiobotocore; credentials from the
    usual AWS environment or instance role."""

    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None
    ):
        from aiobotocore.session import get_session

        self.bucket = bucket
        self.prefix = prefix
        self._session = get_session()
        self._kwargs = {"endpoint_url": endpoint_url, "region_name": region}
        self._client = None
        self._stack = None

    async def _c(self):  # type: ignore[no-untyped-def]
        if self._client is None:
            from contextlib import AsyncExitStack

            self._stack = AsyncExitStack()
            self._client = await self._stack.enter_async_context(
                self._session.create_client("s3", **self._kwargs)
            )
        return self._client

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        client = await self._c()
        await client.put_object(
            Bucket=self.bucket, Key=self.prefix + _safe(key), Body=data, ContentType=content_type
        )

    async def get(self, key: str) -> bytes:
        client = await self._c()
        response = await client.get_object(Bucket=self.bucket, Key=self.prefix + _safe(key))
        async with response["Body"] as stream:
            return await stream.read()

    async def delete(self, key: str) -> None:
        client = await self._c()
        await client.delete_object(Bucket=self.bucket, Key=self.prefix + _safe(key))

    async def delete_prefix(self, prefix: str) -> int:
        client = await self._c()
        paginator = client.get_paginator("list_objects_v2")
        deleted = 0
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + _safe(prefix) + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                await client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
        return deleted

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._client = None


class GcsBlobStore:
    """Google Cloud Storage through gcloud-aio-storage; credentials from the usual Google
    application-default chain (``STORAGE_EMULATOR_HOST`` points it at an emulator)."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        from gcloud.aio.storage import Storage

        self.bucket = bucket
        self.prefix = prefix
        self._storage = Storage()

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._storage.upload(self.bucket, self.prefix + _safe(key), data, content_type=content_type)

    async def get(self, key: str) -> bytes:
        return await self._storage.download(self.bucket, self.prefix + _safe(key))

    async def delete(self, key: str) -> None:
        try:
            await self._storage.delete(self.bucket, self.prefix + _safe(key))
        except Exception as exc:  # already gone is fine, as for the other stores
            if getattr(exc, "status", None) != 404:
                raise

    async def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        params = {"prefix": self.prefix + _safe(prefix) + "/"}
        while True:
            listing = await self._storage.list_objects(self.bucket, params=params)
            for item in listing.get("items", []):
                await self._storage.delete(self.bucket, item["name"])
                deleted += 1
            token = listing.get("nextPageToken")
            if not token:
                return deleted
            params = {**params, "pageToken": token}

    async def close(self) -> None:
        await self._storage.close()
