"""Pipeline: notification rules (edit with a preview) and drafts (read, edit)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from services.console.client import ApiRefused
from services.console.web import Page, page, redirect

router = APIRouter(include_in_schema=False)


@router.get("/rules", response_class=HTMLResponse)
async def rules(p: Page = Depends(page)) -> HTMLResponse:
    body = await p.api.collection("pipeline", "/v1/rules")
    return p.render("rules.html", title="Rules", items=body.get("items") or body.get("rules") or [])


async def _rule(p: Page, rule_id: str) -> dict[str, Any]:
    answer = await p.api.get("pipeline", f"/v1/rules/{rule_id}")
    if answer.status == 404 and answer.message == "Not Found":
        from services.console.client import NotAvailable

        raise NotAvailable("pipeline", "/v1/rules/{id}")
    if not answer.ok:
        raise ApiRefused(answer)
    return answer.body


def _rule_body(form: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {k: form[k] for k in ("name", "event_type", "text") if form.get(k)}
    if form.get("priority", "").isdigit():
        body["priority"] = int(form["priority"])
    return body


@router.get("/rules/{rule_id}", response_class=HTMLResponse)
async def rule(rule_id: str, p: Page = Depends(page)) -> HTMLResponse:
    return p.render(
        "rule.html", title="Rule", r=await _rule(p, rule_id), preview=None, error=None, sample="{}"
    )


@router.post("/rules/{rule_id}")
async def save_rule(rule_id: str, p: Page = Depends(page)) -> Response:
    form = await p.form()
    sample = form.get("sample") or "{}"
    if form.get("action") == "preview":
        try:
            event = json.loads(sample)
        except ValueError as exc:
            return p.render(
                "rule.html",
                422,
                title="Rule",
                r={"id": rule_id, **form},
                preview=None,
                sample=sample,
                error=f"sample event: not valid JSON ({exc})",
            )
        answer = await p.api.post(
            "pipeline", f"/v1/rules/{rule_id}/preview", {"rule": _rule_body(form), "event": event}
        )
        return p.render(
            "rule.html",
            200 if answer.ok else answer.status,
            title="Rule",
            r={"id": rule_id, **form},
            preview=answer.body if answer.ok else None,
            error=None if answer.ok else answer.message,
            sample=sample,
        )
    answer = await p.api.patch("pipeline", f"/v1/rules/{rule_id}", _rule_body(form))
    if not answer.ok:
        return p.render(
            "rule.html",
            answer.status,
            title="Rule",
            r={"id": rule_id, **form},
            preview=None,
            sample=sample,
            error=answer.message,
        )
    return redirect(f"/rules/{rule_id}")


@router.get("/drafts", response_class=HTMLResponse)
async def drafts(p: Page = Depends(page), status: str | None = None) -> HTMLResponse:
    body = await p.api.collection("pipeline", "/v1/drafts", status=status)
    items = body if isinstance(body, list) else body.get("items", [])
    return p.render("drafts.html", title="Drafts", items=items, status=status or "")


@router.get("/drafts/{draft_id}", response_class=HTMLResponse)
async def draft(draft_id: str, p: Page = Depends(page), error: str | None = None) -> HTMLResponse:
    answer = await p.api.get("pipeline", f"/v1/drafts/{draft_id}")
    if not answer.ok:
        raise ApiRefused(answer)
    return p.render("draft.html", title="Draft", d=answer.body, error=error)


@router.post("/drafts/{draft_id}")
async def save_draft(draft_id: str, p: Page = Depends(page)) -> Response:
    form = await p.form()
    answer = await p.api.patch(
        "pipeline", f"/v1/drafts/{draft_id}", {k: form[k] for k in ("title", "text") if k in form}
    )
    if not answer.ok:
        current = await p.api.get("pipeline", f"/v1/drafts/{draft_id}")
        return p.render(
            "draft.html",
            answer.status,
            title="Draft",
            d={**(current.body or {}), **form},
            error=answer.message,
        )
    return redirect(f"/drafts/{draft_id}")
