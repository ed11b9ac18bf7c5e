"""Use cases of the template catalogue (issue 12 §2): create, edit, delete and sync templates
(on the channel's WABA when it is a Meta channel), map a message's named variables onto a
template's parameters, and render a template as text for channels without Meta templates.

A template's status is Meta's review (PENDING → APPROVED / REJECTED, later PAUSED, DISABLED …)
or ``LOCAL`` for a template of a channel that cannot send Meta templates. Every status is also
written to the ``templates`` status table (``catalogues.record_template_status``), which the
claim reads to refuse a send Meta would refuse."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy.engine import Row

from services.sender import repository as repo
from services.sender import template_domain as td
from services.sender.catalogues import record_template_status
from services.sender.channels import default_channel_id
from services.sender.context import Sender
from services.sender.providers.base import ProviderError, SendResult
from services.sender.providers.meta_cloud import MetaTemplates
from services.sender.repository import template_catalogue as trepo
from shared.events import MessageRequested, TemplateContent, TemplateHeader, TextContent, utcnow
from shared.logging import get_logger

log = get_logger(__name__)

TemplateInvalid = td.TemplateInvalid


class TemplateNotFound(Exception):
    pass


class TemplateConflict(Exception):
    """The template cannot be changed now (e.g. Meta is still reviewing it)."""


class MetaRefused(Exception):
    """Meta refused the template; ``status_code`` is what the API answers (422 or 502)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def _meta_error(exc: ProviderError) -> MetaRefused:
    if exc.http_status is not None and 400 <= exc.http_status < 500 and exc.http_status not in (401, 403):
        return MetaRefused(f"Meta refused the template: {exc.reason}", 422)
    return MetaRefused(f"Meta did not take the template, retry later: {exc.reason}", 502)


def _meta(sender: Sender) -> MetaTemplates:
    return MetaTemplates(sender.http_client())


async def _channel(sender: Sender, tenant_id: uuid.UUID, channel_id: uuid.UUID | None) -> Row[Any]:
    async with sender.runtime.engine.begin() as conn:
        if channel_id is None:
            channel_id = await default_channel_id(sender, conn, tenant_id)
        row = await repo.get_channel(conn, tenant_id, channel_id)
    if row is None:
        raise TemplateInvalid("channel_id", f"no channel {channel_id} for this tenant")
    return row


async def _mirror(conn: Any, row: Row[Any]) -> None:
    await record_template_status(
        conn, row.tenant_id, row.name, row.language, row.status, row.reason, row.updated_at
    )


# --- create, edit, delete -------------------------------------------------------------------------


async def create(sender: Sender, tenant_id: uuid.UUID, data: dict[str, Any]) -> Row[Any]:
    parts = td.analyse(
        header=data.get("header"),
        body=data["body"],
        footer=data.get("footer"),
        declared=data.get("variables") or [],
        examples=data.get("examples") or {},
        header_format=data.get("header_format"),
        buttons=data.get("buttons") or [],
    )
    header_format = (data.get("header_format") or ("TEXT" if data.get("header") else "")).upper() or None
    channel = await _channel(sender, tenant_id, data.get("channel_id"))
    if channel.provider == "meta" and header_format in td.MEDIA_FORMATS and not data.get("header_handle"):
        raise TemplateInvalid(
            "header_handle",
            f"Meta reviews an {header_format} header with a sample: upload one with Meta's Resumable "
            "Upload API and give its handle (4::…)",
        )
    async with sender.runtime.engine.connect() as conn:
        if await trepo.find(conn, tenant_id, data["name"], data["language"]) is not None:
            raise TemplateInvalid(
                "name",
                f"a template {data['name']!r} in {data['language']} exists already: PATCH it or pick a new name",
            )
    now = utcnow()
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "channel_id": channel.id,
        "name": data["name"],
        "language": data["language"],
        "category": data["category"],
        "status": td.LOCAL,
        "reason": f"kept in Herald: {channel.provider} channels have no Meta templates, so it is sent as text",
        "header": data.get("header"),
        "header_format": header_format,
        "header_handle": data.get("header_handle"),
        "body": data["body"],
        "footer": data.get("footer"),
        "buttons": data.get("buttons") or [],
        "variables": parts.variables,
        "variable_style": parts.style,
        "parameter_format": td.parameter_format_for(parts.style),
        "examples": data.get("examples") or {},
        "meta_template_id": None,
        "created_at": now,
        "updated_at": now,
    }
    if channel.provider == "meta":
        try:
            answer = await _meta(sender).create(
                sender.channel_config(channel), td.meta_create_body(_Draft(row))
            )
        except ProviderError as exc:
            raise _meta_error(exc) from exc
        row |= {
            "meta_template_id": str(answer.get("id") or "") or None,
            "status": str(answer.get("status") or "PENDING").upper(),
            "reason": None,
            "category": str(answer.get("category") or row["category"]).upper(),
        }
    async with sender.runtime.engine.begin() as conn:
        stored = await trepo.insert(conn, row)
        if stored is None:
            raise TemplateInvalid("name", f"a template {row['name']!r} in {row['language']} exists already")
        await _mirror(conn, stored)
    return stored


class _Draft:
    """A row dict read like a row (for the pure functions of template_domain)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


async def get(sender: Sender, tenant_id: uuid.UUID, template_id: uuid.UUID) -> Row[Any]:
    async with sender.runtime.engine.connect() as conn:
        row = await trepo.get(conn, tenant_id, template_id)
    if row is None:
        raise TemplateNotFound(f"no template {template_id} for this tenant")
    return row


async def update(
    sender: Sender, tenant_id: uuid.UUID, template_id: uuid.UUID, changes: dict[str, Any]
) -> Row[Any]:
    current = await get(sender, tenant_id, template_id)
    merged = {
        k: current._mapping[k]
        for k in (
            "category",
            "header",
            "header_format",
            "header_handle",
            "body",
            "footer",
            "buttons",
            "examples",
        )
    }
    if "header" in changes and "header_format" not in changes:
        merged["header_format"] = "TEXT" if changes["header"] else None
    merged["variables"] = list(current.variables)
    merged |= changes
    if "variables" not in changes and any(k in changes for k in ("header", "body")):
        merged["variables"] = [
            *td.placeholders(merged["header"]),
            *(v for v in td.placeholders(merged["body"]) if v not in td.placeholders(merged["header"])),
        ]
    parts = td.analyse(
        header=merged["header"],
        body=merged["body"],
        footer=merged["footer"],
        declared=merged["variables"],
        examples=merged["examples"] or {},
        header_format=merged["header_format"],
        buttons=merged["buttons"] or [],
    )
    if merged["header_format"]:
        merged["header_format"] = str(merged["header_format"]).upper()
    values: dict[str, Any] = {**merged, "variables": parts.variables, "variable_style": parts.style}
    if current.meta_template_id is None:
        values["parameter_format"] = td.parameter_format_for(parts.style)
    elif td.is_named(current) and parts.style != "named":
        raise TemplateInvalid(
            "body",
            f"template {current.name!r} ({current.language}) is NAMED at Meta: keep named variables "
            "({{first_name}}), or create a new template for positional ones",
        )
    if current.status not in td.EDITABLE_STATUSES:
        raise TemplateConflict(
            f"template {current.name!r} ({current.language}) is {current.status}: Meta edits only APPROVED, "
            "REJECTED or PAUSED templates; try again once its review ends"
        )
    if current.meta_template_id:
        if current.status == "APPROVED" and merged["category"] != current.category:
            raise TemplateInvalid(
                "category", "Meta does not change the category of an APPROVED template: create a new template"
            )
        channel = await _channel(sender, tenant_id, current.channel_id)
        body: dict[str, Any] = {"components": td.meta_components(_Draft({**current._mapping, **values}))}
        if merged["category"] != current.category:
            body["category"] = merged["category"]
        try:
            await _meta(sender).edit(sender.channel_config(channel), current.meta_template_id, body)
        except ProviderError as exc:
            raise _meta_error(exc) from exc
        values |= {"status": "PENDING", "reason": "edited: in Meta's review again"}
    async with sender.runtime.engine.begin() as conn:
        row = await trepo.update(conn, current.id, **values, updated_at=utcnow())
        assert row is not None
        await _mirror(conn, row)
    return row


async def delete(sender: Sender, tenant_id: uuid.UUID, template_id: uuid.UUID) -> None:
    current = await get(sender, tenant_id, template_id)
    if current.meta_template_id:
        channel = await _channel(sender, tenant_id, current.channel_id)
        try:
            await _meta(sender).delete(sender.channel_config(channel), current.name, current.meta_template_id)
        except ProviderError as exc:
            raise _meta_error(exc) from exc
    async with sender.runtime.engine.begin() as conn:
        await trepo.delete(conn, current.id)
        # queued messages naming it fail with a clear reason instead of a refusal from Meta
        await record_template_status(
            conn, tenant_id, current.name, current.language, "DELETED", "deleted from the catalogue", utcnow()
        )


# --- sync with Meta --------------------------------------------------------------------------------


async def sync(sender: Sender, tenant_id: uuid.UUID, channel_id: uuid.UUID | None = None) -> list[Row[Any]]:
    """Read the templates of the tenant's Meta channels' WABAs (or of one channel): statuses of
    known templates are updated, templates made elsewhere (Meta's UI) are added."""
    async with sender.runtime.engine.connect() as conn:
        channels = await trepo.meta_channels(conn, tenant_id)
    if channel_id is not None:
        channels = [c for c in channels if c.id == channel_id]
        if not channels:
            raise TemplateInvalid(
                "channel_id", f"no Meta channel {channel_id} with settings.waba_id for this tenant"
            )
    synced: list[Row[Any]] = []
    for channel in channels:
        try:
            items = await _meta(sender).list_all(sender.channel_config(channel))
        except ProviderError as exc:
            raise _meta_error(exc) from exc
        synced.extend(await _apply(sender, channel, items))
    return synced


async def _apply(sender: Sender, channel: Row[Any], items: list[dict[str, Any]]) -> list[Row[Any]]:
    now = utcnow()
    out = []
    async with sender.runtime.engine.begin() as conn:
        for item in items:
            name, language = str(item.get("name") or ""), str(item.get("language") or "")
            if not name or not language:
                continue
            status = str(item.get("status") or "PENDING").upper()
            rejected = item.get("rejected_reason")
            reason = f"rejected by Meta: {rejected}" if status == "REJECTED" and rejected else None
            existing = await trepo.find(conn, channel.tenant_id, name, language)
            if existing is None:
                row = await trepo.insert(
                    conn,
                    {
                        "id": uuid.uuid4(),
                        "tenant_id": channel.tenant_id,
                        "channel_id": channel.id,
                        "name": name,
                        "language": language,
                        "category": str(item.get("category") or "UTILITY").upper(),
                        "status": status,
                        "reason": reason,
                        "meta_template_id": str(item.get("id") or "") or None,
                        "created_at": now,
                        "updated_at": now,
                        **td.from_meta(item),
                    },
                )
            elif (
                (existing.status, existing.reason) != (status, reason)
                or not existing.meta_template_id
                or _meta_format(item, existing) != existing.parameter_format
            ):
                row = await trepo.update(
                    conn,
                    existing.id,
                    status=status,
                    reason=reason,
                    meta_template_id=existing.meta_template_id or str(item.get("id") or "") or None,
                    parameter_format=_meta_format(item, existing),
                    updated_at=now,
                )
            else:
                row = existing
            if row is not None:
                await _mirror(conn, row)
                out.append(row)
    return out


def _meta_format(item: dict[str, Any], existing: Row[Any]) -> str:
    """Meta's ``parameter_format`` of a listed template; the catalogue's own when Meta omits it."""
    if "parameter_format" not in item:
        return str(existing.parameter_format)
    return str(td.from_meta(item)["parameter_format"])


async def sync_forever(sender: Sender) -> None:
    """Every ``template_sync_seconds`` (0: never), sync every tenant's Meta channels."""
    interval = sender.settings.template_sync_seconds
    if interval <= 0:
        return
    while not sender.runtime.stopping.is_set():
        try:
            async with sender.runtime.engine.connect() as conn:
                channels = await trepo.meta_channels(conn, None)
            for channel in channels:
                try:
                    items = await _meta(sender).list_all(sender.channel_config(channel))
                except ProviderError as exc:
                    log.warning("template sync failed", channel_id=str(channel.id), error=exc.reason[:200])
                    continue
                await _apply(sender, channel, items)
        except Exception as exc:  # the database is away: the next round tries again
            log.warning("template sync round failed", error=repr(exc)[:300])
        await asyncio.sleep(interval)


# --- sending ---------------------------------------------------------------------------------------


async def resolve(sender: Sender, tenant_id: uuid.UUID, req: MessageRequested) -> MessageRequested:
    """Check the request's templates against the catalogue and map named ``variables`` onto
    their parameters, in each template's order (see ``resolve_many``)."""
    return (await resolve_many(sender, tenant_id, [req]))[0]


async def resolve_many(
    sender: Sender, tenant_id: uuid.UUID, reqs: Sequence[MessageRequested], prefixes: Sequence[str] = ()
) -> list[MessageRequested]:
    """Check every request's templates (content and fallback) against the catalogue, read in one
    indexed look-up for them all, and map named ``variables`` onto their parameters. A template
    the catalogue does not have passes as given (Meta says what it thinks), unless it names
    ``variables``. Raises ``TemplateInvalid`` naming what to fix (its field starts with
    ``prefixes[i]``, e.g. ``messages.3.``, for the i-th request)."""
    keys = {(t.name, t.language) for r in reqs for t in _templates_of(r)}
    if not keys:
        return list(reqs)
    async with sender.runtime.engine.connect() as conn:
        found = await trepo.find_many(conn, tenant_id, keys)
    out = []
    for i, req in enumerate(reqs):
        at = prefixes[i] if prefixes else ""
        content, fallback = req.content, req.fallback_template
        if isinstance(content, TemplateContent):
            content = _checked(found.get((content.name, content.language)), content, f"{at}content")
        if fallback is not None:
            fallback = _checked(
                found.get((fallback.name, fallback.language)), fallback, f"{at}fallback_template"
            )
        if content is not req.content or fallback is not req.fallback_template:
            req = req.model_copy(update={"content": content, "fallback_template": fallback})
        out.append(req)
    return out


def _templates_of(req: MessageRequested) -> list[TemplateContent]:
    found = [req.content] if isinstance(req.content, TemplateContent) else []
    return [*found, *([req.fallback_template] if req.fallback_template is not None else [])]


def mapped_content(template: Row[Any], content: TemplateContent) -> TemplateContent:
    """``content`` checked against its catalogue ``template`` and with its named ``variables``
    mapped onto the template's parameters, in the template's order and format
    (``TemplateInvalid`` names what does not fit). The single message and every campaign
    recipient go through it."""
    return _checked(template, content, "content")


def _checked(template: Row[Any] | None, content: TemplateContent, where: str) -> TemplateContent:
    if content.variables is not None and content.body_params:
        raise TemplateInvalid(f"{where}.variables", "give either variables or body_params, not both")
    if template is None:
        if content.variables is None:
            return content
        raise TemplateInvalid(
            f"{where}.name",
            f"no template {content.name!r} in {content.language} in the catalogue: create it with "
            "POST /v1/templates (or sync it), or give body_params",
        )
    td.check_request(template, content, where)
    named = td.is_named(template)  # Meta wants each parameter by name, and refuses them in order
    header = content.header
    if content.variables is not None:
        try:
            mapped = td.map_variables(template, content.variables)
        except TemplateInvalid as exc:
            raise TemplateInvalid(f"{where}.variables", exc.problem) from None
        body_params, body_names, header_name = mapped.body_params, mapped.body_names, mapped.header_name
        if mapped.header_text is not None:
            header = TemplateHeader(type="text", text=mapped.header_text)
    else:  # positional: the names, for a NAMED template, are the template's own in order
        body_params, body_names = content.body_params, td.placeholders(template.body)
        header_name = next(iter(td.placeholders(template.header)), None)
    # the catalogue says the format: names for a NAMED template, none for a POSITIONAL one
    if header is not None and header.type == "text":
        header = header.model_copy(update={"parameter_name": header_name if named else None})
    return content.model_copy(
        update={
            "body_params": body_params,
            "body_param_names": body_names if named and body_params else None,
            "header": header,
        }
    )


async def as_text(
    sender: Sender, tenant_id: uuid.UUID, content: TemplateContent
) -> tuple[TextContent, str] | None:
    """A catalogue template rendered as text, with the history note, for a channel without Meta
    templates; None when the catalogue does not have it (the adapter says what it can do)."""
    async with sender.runtime.engine.connect() as conn:
        template = await trepo.find(conn, tenant_id, content.name, content.language)
    if template is None:
        return None
    header, link = None, None
    if content.header is not None:
        header, link = (
            (content.header.text, None) if content.header.type == "text" else (None, content.header.link)
        )
    text = td.render_text(template, header, content.body_params, header_link=link, buttons=content.buttons)
    note = f"template {content.name!r} ({content.language}) rendered locally and sent as text"
    return TextContent(body=text[:4096]), note


def noted(result: SendResult, note: str | None) -> SendResult:
    return replace(result, notes=(*result.notes, note)) if note else result
