"""``GET /v1/channels/{id}/session``: a WAHA/Evolution channel's WhatsApp session and, while it
waits for one, the QR code to scan (services.sender.sessions has the use case)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends

from services.sender import sessions
from services.sender.context import Sender
from services.sender.schemas import SessionView
from shared.api import ERROR_RESPONSES, ApiError
from shared.tenancy import Tenant


def session_router(sender: Sender) -> APIRouter:
    router = APIRouter(prefix="/v1/channels", tags=["channels"], responses=ERROR_RESPONSES)

    @router.get(
        "/{channel_id}/session",
        response_model=SessionView,
        summary="A gateway channel's WhatsApp session, with the QR code to scan",
        description="Asks the gateway (WAHA: GET /api/sessions/{session} and /api/{session}/auth/qr; "
        "Evolution: GET /instance/connectionState/{instance} and /instance/connect/{instance}). "
        "While the session is not connected the channel is paused and its messages wait. "
        "Channels of other providers have no session: they answer connected.",
    )
    async def get_session(
        channel_id: uuid.UUID, tenant: Tenant = Depends(sender.runtime.auth)
    ) -> SessionView:
        found = await sessions.current_session(sender, tenant.id, channel_id)
        if found is None:
            raise ApiError(404, "not_found", f"no channel {channel_id} for this tenant")
        return SessionView.model_validate(found)

    return router
