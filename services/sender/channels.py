"""Channels: a WhatsApp number on a provider, with its limits, credentials and breaker.

Use cases behind ``/v1/channels``, and each tenant's default channel (an implicit sandbox one
for a tenant with none, so Herald runs with no credentials)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy.engine import Row

from services.sender import repository as repo
from services.sender import sessions, status
from services.sender.context import Sender
from services.sender.providers.registry import SPECS
from shared.api import ApiError
from shared.events import utcnow


class ChannelNotFound(Exception):
    def __init__(self, channel_id: uuid.UUID) -> None:
        super().__init__(f"no channel {channel_id} for this tenant")


async def default_channel_id(sender: Sender, conn: Any, tenant_id: uuid.UUID) -> uuid.UUID:
    """The tenant's default channel; a tenant with none gets an implicit sandbox channel (no pair
    interval, no tier), so Herald runs with no credentials."""
    cached = sender.default_channels.get(tenant_id)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    found = await repo.default_channel(conn, tenant_id)
    if found is None:
        new_id = uuid.uuid4()
        await repo.insert_channel(
            conn,
            {
                "id": new_id,
                "tenant_id": tenant_id,
                "name": "sandbox (implicit)",
                "provider": "sandbox",
                "is_default": True,
                "implicit": True,
                "throughput_per_second": sender.settings.implicit_sandbox_throughput,
                "portfolio": str(new_id),
                "tier": None,
                "pair_interval_seconds": 0.0,
                "enforce_window": False,
            },
            if_absent=True,
        )
        found = await repo.default_channel(conn, tenant_id)
        assert found is not None
    sender.default_channels[tenant_id] = (time.monotonic() + 5.0, found)
    return found


def forget_default(sender: Sender, tenant_id: uuid.UUID) -> None:
    sender.default_channels.pop(tenant_id, None)


def validate_channel_fields(
    provider: str, settings: dict[str, str], credentials: dict[str, str]
) -> dict[str, str]:
    """Settings with defaults filled in; raises ApiError naming what is missing or unknown."""
    spec = SPECS[provider]
    merged = {**dict(spec.setting_defaults), **settings}
    allowed = (*spec.settings, *spec.optional_settings)
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"settings: {provider} has no {', '.join(unknown)} (allowed: {', '.join(allowed) or 'none'})",
        )
    unknown = sorted(set(credentials) - set(spec.credentials))
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"credentials: {provider} has no {', '.join(unknown)} (allowed: {', '.join(spec.credentials) or 'none'})",
        )
    missing = [k for k in spec.settings if not merged.get(k)]
    missing += [k for k in spec.credentials if not credentials.get(k)]
    if missing:
        raise ApiError(422, "invalid_request", f"a {provider} channel needs {', '.join(missing)}")
    return merged


async def _share_tier(
    conn: Any, tenant_id: uuid.UUID, channel_id: uuid.UUID, portfolio: str, tier: int | None, given: bool
) -> int | None:
    """The messaging tier belongs to the portfolio (WhatsApp counts unique recipients over all
    of its numbers): a tier given for one channel is set on every channel of its portfolio; a
    channel that joins a portfolio without giving one takes the portfolio's."""
    if given:
        await repo.set_portfolio_tier(conn, tenant_id, channel_id, portfolio, tier, utcnow())
        return tier
    has_peers, peers_tier = await repo.portfolio_tier(conn, tenant_id, channel_id, portfolio)
    return peers_tier if has_peers else tier


async def create_channel(
    sender: Sender, tenant_id: uuid.UUID, fields: dict[str, Any], given: set[str]
) -> Row[Any]:
    """``fields``: the create request's values; ``given``: the names the caller set."""
    provider = fields["provider"]
    merged = validate_channel_fields(provider, fields["settings"], fields["credentials"])
    channel_id = uuid.uuid4()
    portfolio = fields.get("portfolio") or str(channel_id)
    async with sender.runtime.engine.begin() as conn:
        if fields["is_default"]:
            await repo.unset_other_defaults(conn, tenant_id, channel_id)
            forget_default(sender, tenant_id)
        tier = await _share_tier(conn, tenant_id, channel_id, portfolio, fields.get("tier"), "tier" in given)
        credentials = fields["credentials"]
        await repo.insert_channel(
            conn,
            {
                "id": channel_id,
                "tenant_id": tenant_id,
                "name": fields["name"],
                "provider": provider,
                "base_url": fields.get("base_url"),
                "settings": merged,
                "credentials_enc": sender.runtime.secrets.encrypt(json.dumps(credentials))
                if credentials
                else None,
                "is_default": fields["is_default"],
                "throughput_per_second": fields["throughput_per_second"],
                "portfolio": portfolio,
                "tier": tier,
                "pair_interval_seconds": fields["pair_interval_seconds"],
                "quiet_hours": fields.get("quiet_hours"),
                "enforce_window": SPECS[provider].enforce_window,
            },
        )
        row = await repo.get_channel(conn, tenant_id, channel_id)
    assert row is not None
    return row


async def update_channel(
    sender: Sender, tenant_id: uuid.UUID, channel_id: uuid.UUID, fields: dict[str, Any]
) -> Row[Any]:
    """``fields``: only what the caller set (``model_dump(exclude_unset=True)``)."""
    async with sender.runtime.engine.begin() as conn:
        row = await repo.get_channel(conn, tenant_id, channel_id)
        if row is None:
            raise ChannelNotFound(channel_id)
        values: dict[str, Any] = {"updated_at": utcnow()}
        if "settings" in fields or "credentials" in fields:
            new_settings = {**(row.settings or {}), **(fields.get("settings") or {})}
            new_creds = {**sender.credentials(row), **(fields.get("credentials") or {})}
            values["settings"] = validate_channel_fields(row.provider, new_settings, new_creds)
            values["credentials_enc"] = (
                sender.runtime.secrets.encrypt(json.dumps(new_creds)) if new_creds else None
            )
        for name in ("name", "base_url", "throughput_per_second", "pair_interval_seconds", "quiet_hours"):
            if name in fields:
                values[name] = fields[name]
        if "portfolio" in fields:  # null: back to a portfolio of its own
            values["portfolio"] = fields["portfolio"] or str(channel_id)
        if "tier" in fields or "portfolio" in fields:
            values["tier"] = await _share_tier(
                conn,
                tenant_id,
                channel_id,
                values.get("portfolio", row.portfolio),
                fields["tier"] if "tier" in fields else row.tier,
                "tier" in fields,
            )
        if fields.get("paused") is False:
            values.update(paused=False, pause_reason=None, consecutive_failures=0, breaker_open_until=None)
            await sessions.keep_session_pause(conn, channel_id, values)  # not into a dead session
        elif fields.get("paused") is True:
            values.update(paused=True, pause_reason="paused by an operator")
        if fields.get("is_default") is True:
            await repo.unset_other_defaults(conn, tenant_id, channel_id)
            values["is_default"] = True
        elif fields.get("is_default") is False:
            values["is_default"] = False
        if "is_default" in fields:
            forget_default(sender, tenant_id)
        await repo.update_channel(conn, channel_id, **values)
        await repo.notify_due(conn)  # a resumed or faster channel may have due messages
        row = await repo.get_channel(conn, tenant_id, channel_id)
    assert row is not None
    return row


async def delete_channel(sender: Sender, tenant_id: uuid.UUID, channel_id: uuid.UUID) -> None:
    """Remove a channel; its queued messages fail (``channel_deleted``)."""
    now = utcnow()
    async with sender.runtime.uow() as uow:
        if await repo.get_channel(uow.conn, tenant_id, channel_id) is None:
            raise ChannelNotFound(channel_id)
        await repo.update_channel(uow.conn, channel_id, deleted_at=now, is_default=False)
        reason = f"channel {channel_id} was deleted before the message was sent"
        queued = await repo.lock_queued_on_channel(uow.conn, channel_id)
        await status.record(
            uow,
            [
                status.Change(m._mapping, "failed", "queued", reason, error_code="channel_deleted")
                for m in queued
            ],
        )
        await uow.commit()
    forget_default(sender, tenant_id)
