"""Campaigns (issue 12 §3): one catalogue template to many recipients, each with its variables.

Every recipient becomes an ordinary message through the batch path's bulk store
(``accept.store_rows``), with ``campaign_id`` set and a low priority by default, so every limit
(throughput, tier, pair, quiet hours, priority under transactional traffic) applies as for a
single message. Invariants:

- A page is checked whole (variables, CSV shape) before anything is stored: one bad row is a
  ``CampaignInvalid`` naming it, and nothing of the page is stored. Refusals (not E.164, opted
  out, duplicate recipient within the campaign) are answered per recipient and store nothing.
- Pages, pause, resume and cancel of a campaign lock its row, so they run one at a time.
- Pause parks the campaign's ``queued`` messages as ``held``, which the claim never reads (its
  query is unchanged); a message already claimed finishes. Resume puts them back ``queued``.
  ``held`` is internal parking: it writes no history line or event (the message is still, to
  its consumers, queued).
- Cancel fails the campaign's queued and held messages with ``error_code`` campaign_cancelled
  (a final state, through ``status.record``); in-flight ones finish.
- A page sent again with the same Idempotency-Key is answered as the first time, queues nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.sender import repository as repo
from services.sender import status
from services.sender import template_domain as td
from services.sender.accept import campaign_row, store_rows
from services.sender.channels import default_channel_id
from services.sender.context import Sender
from services.sender.repository import template_catalogue as trepo
from services.sender.templates import mapped_content
from shared.events import MessageRequested, TemplateContent, utcnow
from shared.phone import InvalidPhoneNumber, normalize_e164

#: most recipients a campaign holds, and a JSON page
MAX_RECIPIENTS = 100_000
MAX_PAGE = 1000
#: rows per insert statement (parameters stay well under PostgreSQL's 32,767)
CHUNK = 1000
CANCELLED = "campaign_cancelled"
OPEN_STATES = frozenset({"active", "paused"})


class CampaignInvalid(Exception):
    """Bad input (a row, a column, a variable): 422 naming what to fix; nothing was stored."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class CampaignNotFound(Exception):
    pass


class CampaignConflict(Exception):
    """The campaign's state does not allow it (409), or an Idempotency-Key reused for another page."""


@dataclass(frozen=True)
class Recipient:
    """One recipient as given: ``where`` names it in errors (``recipients.3`` or ``row 5``)."""

    where: str
    to: str
    variables: dict[str, str]


@dataclass
class PageResult:
    queued: int = 0
    refused: int = 0
    refusals: list[dict[str, Any]] = field(default_factory=list)
    replayed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"queued": self.queued, "refused": self.refused, "refusals": self.refusals}


# --- pure: CSV and fingerprints ----------------------------------------------------------------


def parse_csv(data: bytes, variables: list[str]) -> list[Recipient]:
    """A CSV of recipients: a header with ``to`` and one column per template variable, then a
    row per recipient. Rows are numbered as in the file (the header is row 1). Every problem of
    shape (a missing or unknown column, a row of the wrong width, an empty value) is collected
    and raised together as ``CampaignInvalid``; a number not in E.164 form is a refusal later."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CampaignInvalid(f"the CSV is not UTF-8 (byte {exc.start}): save it as UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    if not header or header == [""]:
        raise CampaignInvalid("the CSV is empty: give a header row with 'to' and the template's variables")
    problems: list[dict[str, Any]] = []
    if "to" not in header:
        problems.append({"row": 1, "column": "to", "problem": "missing column 'to' (the recipient, E.164)"})
    for name in variables:
        if name not in header:
            problems.append(
                {"row": 1, "column": name, "problem": f"missing column {name!r}, a variable of the template"}
            )
    for name in header:
        if name != "to" and name not in variables:
            problems.append(
                {
                    "row": 1,
                    "column": name,
                    "problem": f"{name!r} is not a variable of the template, which has {variables}",
                }
            )
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        problems.append({"row": 1, "column": dupes[0], "problem": f"column {dupes[0]!r} appears twice"})
    if problems:
        raise _invalid(problems)
    out: list[Recipient] = []
    for number, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue  # a blank line
        if len(row) != len(header):
            problems.append(
                {
                    "row": number,
                    "column": None,
                    "problem": f"has {len(row)} fields, the header has {len(header)}",
                }
            )
            continue
        values = {h: c.strip() for h, c in zip(header, row, strict=True)}
        for name in header:
            if not values[name]:
                problems.append({"row": number, "column": name, "problem": "is empty"})
        to = values.pop("to")
        out.append(Recipient(f"row {number}", to, values))
        if len(problems) >= 100:
            break
    if problems:
        raise _invalid(problems)
    if not out:
        raise CampaignInvalid("the CSV has a header but no recipients")
    return out


def _invalid(problems: list[dict[str, Any]]) -> CampaignInvalid:
    first = problems[0]
    where = f"row {first['row']}" + (f", column {first['column']!r}" if first["column"] else "")
    more = f" (and {len(problems) - 1} more problems, listed in details)" if len(problems) > 1 else ""
    return CampaignInvalid(
        f"CSV {where}: {first['problem']}{more}; nothing was stored",
        [
            {
                "field": f"row {p['row']}" + (f".{p['column']}" if p["column"] else ""),
                "problem": p["problem"],
            }
            for p in problems
        ],
    )


def page_fingerprint(recipients: Iterable[Recipient]) -> str:
    h = hashlib.sha256()
    for r in recipients:
        h.update(json.dumps([r.to, sorted(r.variables.items())]).encode())
    return h.hexdigest()


# --- use cases ------------------------------------------------------------------------------------


async def create(
    sender: Sender,
    tenant_id: uuid.UUID,
    *,
    name: str | None,
    template_name: str,
    template_language: str,
    channel_id: uuid.UUID | None,
    priority: int,
    send_at: datetime | None,
    recipients: list[Recipient],
    idempotency_key: str | None,
) -> tuple[Any, PageResult]:
    """Create a campaign with its first page (maybe empty). The same Idempotency-Key again is
    the first campaign and its first page's answer (``replayed``)."""
    template = await _template(sender, tenant_id, template_name, template_language)
    if idempotency_key:
        async with sender.runtime.engine.connect() as conn:
            existing = await repo.campaign_by_idempotency_key(conn, tenant_id, idempotency_key)
        if existing is not None:
            return existing, await _replay(sender, existing.id, idempotency_key, page_fingerprint(recipients))
    async with sender.runtime.engine.connect() as conn:
        if channel_id is None:
            channel_id = await default_channel_id(sender, conn, tenant_id)
        elif not await repo.channel_exists(conn, tenant_id, channel_id):
            raise CampaignNotFound(f"no channel {channel_id} for this tenant")
    now = utcnow()
    campaign_id = uuid.uuid4()
    row = {
        "id": campaign_id,
        "tenant_id": tenant_id,
        "name": name,
        "template_name": template_name,
        "template_language": template_language,
        "channel_id": channel_id,
        "priority": priority,
        "send_at": send_at,
        "state": "active",
        "accepted": 0,
        "refused": 0,
        "idempotency_key": idempotency_key,
        "created_at": now,
        "updated_at": now,
    }
    checked = _check(template, recipients)
    async with sender.runtime.uow() as uow:
        if not await repo.insert_campaign(uow.conn, row):
            existing = await repo.campaign_by_idempotency_key(uow.conn, tenant_id, idempotency_key or "")
            if existing is None:
                raise CampaignConflict("the campaign could not be created; retry")
            return existing, await _replay(
                sender, existing.id, idempotency_key or "", page_fingerprint(recipients)
            )
        campaign = await repo.lock_campaign(uow.conn, tenant_id, campaign_id)
        result = await _store(sender, uow, campaign, checked, idempotency_key, page_fingerprint(recipients))
        await uow.commit()
    async with sender.runtime.engine.connect() as conn:
        return await repo.get_campaign(conn, tenant_id, campaign_id), result


async def add_recipients(
    sender: Sender,
    tenant_id: uuid.UUID,
    campaign_id: uuid.UUID,
    recipients: list[Recipient],
    idempotency_key: str | None,
) -> PageResult:
    """Append a page (JSON ≤ 1,000, or a whole CSV) to an active or paused campaign."""
    async with sender.runtime.engine.connect() as conn:
        campaign = await repo.get_campaign(conn, tenant_id, campaign_id)
    if campaign is None:
        raise CampaignNotFound(f"no campaign {campaign_id} for this tenant")
    fingerprint = page_fingerprint(recipients)
    if idempotency_key:
        replayed = await _replay(sender, campaign_id, idempotency_key, fingerprint, missing_ok=True)
        if replayed is not None:
            return replayed
    template = await _template(sender, tenant_id, campaign.template_name, campaign.template_language)
    checked = _check(template, recipients)
    async with sender.runtime.uow() as uow:
        campaign = await repo.lock_campaign(uow.conn, tenant_id, campaign_id)
        if campaign is None:
            raise CampaignNotFound(f"no campaign {campaign_id} for this tenant")
        if idempotency_key and await repo.campaign_page(uow.conn, campaign_id, idempotency_key):
            replay_after = True
        else:
            replay_after = False
            result = await _store(sender, uow, campaign, checked, idempotency_key, fingerprint)
            await uow.commit()
    if replay_after:  # a concurrent page with the same key won
        return await _replay(sender, campaign_id, idempotency_key or "", fingerprint)
    return result


async def _template(sender: Sender, tenant_id: uuid.UUID, name: str, language: str) -> Any:
    async with sender.runtime.engine.connect() as conn:
        template = await trepo.find(conn, tenant_id, name, language)
    if template is None:
        raise CampaignInvalid(
            f"template: no template {name!r} in {language} in the catalogue: create it with "
            "POST /v1/templates (or sync it)",
            [{"field": "template.name", "problem": "not in the catalogue"}],
        )
    return template


@dataclass(frozen=True)
class _Checked:
    recipient: Recipient
    index: int
    to: str | None  # None: not E.164
    problem: str | None
    content: TemplateContent | None


def _check(template: Any, recipients: list[Recipient]) -> list[_Checked]:
    """Map every recipient's variables onto the template (CampaignInvalid naming each one that
    does not fit) and normalise its number (a refusal when it is not E.164)."""
    out: list[_Checked] = []
    problems: list[dict[str, Any]] = []
    for i, r in enumerate(recipients):
        try:
            content = mapped_content(
                template,
                TemplateContent(name=template.name, language=template.language, variables=r.variables),
            )
        except td.TemplateInvalid as exc:
            problems.append({"field": f"{r.where}.variables", "problem": exc.problem})
            if len(problems) >= 100:
                break
            continue
        try:
            to: str | None = normalize_e164(r.to)
            problem = None
        except InvalidPhoneNumber as exc:
            to, problem = None, str(exc)
        out.append(_Checked(r, i, to, problem, content))
    if problems:
        more = f" (and {len(problems) - 1} more, listed in details)" if len(problems) > 1 else ""
        raise CampaignInvalid(
            f"{problems[0]['field']}: {problems[0]['problem']}{more}; nothing was stored", problems
        )
    return out


async def _store(
    sender: Sender,
    uow: Any,
    campaign: Any,
    checked: list[_Checked],
    idempotency_key: str | None,
    fingerprint: str,
) -> PageResult:
    """Refuse what must be refused, store the rest as messages (in chunks, one transaction)."""
    if campaign.state not in OPEN_STATES:
        raise CampaignConflict(f"campaign {campaign.id} is {campaign.state}: it takes no more recipients")
    if campaign.accepted + campaign.refused + len(checked) > MAX_RECIPIENTS:
        raise CampaignInvalid(
            f"a campaign holds at most {MAX_RECIPIENTS:,} recipients; it has "
            f"{campaign.accepted + campaign.refused:,} and this page {len(checked):,}: start another campaign"
        )
    result = PageResult()

    def refuse(c: _Checked, reason: str, detail: str) -> None:
        result.refusals.append(
            {
                "index": c.index,
                "where": c.recipient.where,
                "to": c.recipient.to,
                "reason": reason,
                "detail": detail,
            }
        )

    hashes: dict[int, str] = {}
    seen: set[str] = set()
    for c in checked:
        if c.to is None:
            refuse(c, "not_e164", c.problem or "not an E.164 number")
            continue
        h = sender.hash_phone(c.to)
        if h in seen:
            refuse(c, "duplicate", f"{c.to} appears earlier in this page")
            continue
        seen.add(h)
        hashes[c.index] = h
    all_hashes = list(hashes.values())
    opted, earlier = set(), set()
    for start in range(0, len(all_hashes), CHUNK):
        part = all_hashes[start : start + CHUNK]
        opted |= await repo.opted_out_among(uow.conn, campaign.tenant_id, part)
        earlier |= await repo.campaign_recipients_among(uow.conn, campaign.id, part)
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for c in checked:
        h = hashes.get(c.index)
        if h is None:
            continue
        if h in opted:
            refuse(c, "opted_out", f"{c.to} is on the opt-out list")
            continue
        if h in earlier:
            refuse(c, "duplicate", f"{c.to} is already a recipient of this campaign")
            continue
        req = MessageRequested(
            message_id=uuid.uuid4(),
            to=c.to or "",
            content=c.content,
            channel_id=campaign.channel_id,
            priority=campaign.priority,
            origin="campaign",
            correlation_id=str(campaign.id),
        )
        rows.append(
            campaign_row(
                sender,
                campaign.tenant_id,
                req,
                campaign.channel_id,
                now,
                campaign_id=campaign.id,
                not_before=campaign.send_at,
            )
        )
    for start in range(0, len(rows), CHUNK):
        await store_rows(uow, rows[start : start + CHUNK], now)
    if rows and campaign.state == "paused":
        await repo.hold_campaign(uow.conn, campaign.id, now)
    result.queued = len(rows)
    result.refused = len(result.refusals)
    result.refusals.sort(key=lambda r: r["index"])
    await repo.add_campaign_counts(uow.conn, campaign.id, result.queued, result.refused, now)
    if idempotency_key:
        await repo.insert_campaign_page(
            uow.conn,
            {
                "campaign_id": campaign.id,
                "idempotency_key": idempotency_key,
                "request_hash": fingerprint,
                "result": result.as_json(),
                "created_at": now,
            },
        )
    return result


async def _replay(
    sender: Sender, campaign_id: uuid.UUID, key: str, fingerprint: str, *, missing_ok: bool = False
) -> Any:
    async with sender.runtime.engine.connect() as conn:
        page = await repo.campaign_page(conn, campaign_id, key)
    if page is None:
        if missing_ok:
            return None
        return PageResult(replayed=True)
    if page.request_hash != fingerprint:
        raise CampaignConflict(
            f"Idempotency-Key {key!r} was already used for a different page of campaign {campaign_id}; "
            "use a new key for a new page"
        )
    return PageResult(replayed=True, **page.result)


async def show(
    sender: Sender, tenant_id: uuid.UUID, campaign_id: uuid.UUID
) -> tuple[dict[str, Any], dict[str, int]]:
    """The campaign and its messages' counts by status; an active campaign with nothing left
    to send shows as completed (not stored: a page appended later makes it active again)."""
    async with sender.runtime.engine.connect() as conn:
        campaign = await repo.get_campaign(conn, tenant_id, campaign_id)
        if campaign is None:
            raise CampaignNotFound(f"no campaign {campaign_id} for this tenant")
        counts = await repo.campaign_status_counts(conn, campaign_id)
    view = dict(campaign._mapping)
    pending = sum(counts.get(s, 0) for s in ("queued", "held", "sending"))
    if campaign.state == "active" and campaign.accepted > 0 and pending == 0:
        view["state"] = "completed"  # derived: a later page makes it active again
    return view, counts


async def pause(sender: Sender, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> int:
    """Stop sending: the queued messages are held. How many were held."""
    async with sender.runtime.uow() as uow:
        campaign = await _locked(uow, tenant_id, campaign_id, {"active", "paused"}, "paused")
        now = utcnow()
        await repo.set_campaign_state(uow.conn, campaign.id, "paused", now)
        held = await repo.hold_campaign(uow.conn, campaign.id, now)
        await uow.commit()
    return held


async def resume(sender: Sender, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> int:
    """Send again: the held messages are queued, and the dispatchers woken. How many."""
    async with sender.runtime.uow() as uow:
        campaign = await _locked(uow, tenant_id, campaign_id, {"active", "paused"}, "resumed")
        now = utcnow()
        await repo.set_campaign_state(uow.conn, campaign.id, "active", now)
        released = await repo.release_campaign(uow.conn, campaign.id, now)
        if released:
            await repo.notify_due(uow.conn)
        await uow.commit()
    return released


async def cancel(sender: Sender, tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> int:
    """Stop for good: queued and held messages fail with campaign_cancelled; in-flight ones
    finish. How many were cancelled."""
    async with sender.runtime.uow() as uow:
        campaign = await _locked(uow, tenant_id, campaign_id, {"active", "paused", "cancelled"}, "cancelled")
        now = utcnow()
        await repo.set_campaign_state(uow.conn, campaign.id, "cancelled", now)
        # held is not a status consumers know: back to queued (unseen: same transaction) first
        await repo.release_campaign(uow.conn, campaign.id, now)
        rows = await repo.lock_campaign_unsent(uow.conn, campaign.id)
        for start in range(0, len(rows), CHUNK):
            await status.record(
                uow,
                [
                    status.Change(
                        r._mapping, "failed", r.status, "campaign cancelled", error_code=CANCELLED, at=now
                    )
                    for r in rows[start : start + CHUNK]
                ],
            )
        await uow.commit()
    return len(rows)


async def _locked(
    uow: Any, tenant_id: uuid.UUID, campaign_id: uuid.UUID, allowed: set[str], verb: str
) -> Any:
    campaign = await repo.lock_campaign(uow.conn, tenant_id, campaign_id)
    if campaign is None:
        raise CampaignNotFound(f"no campaign {campaign_id} for this tenant")
    if campaign.state not in allowed:
        raise CampaignConflict(f"campaign {campaign_id} is {campaign.state}: it cannot be {verb}")
    return campaign
