"""``herald templates list|sync`` (the sender's template catalogue, /v1/templates)."""

from __future__ import annotations

import argparse
from typing import Any

from herald.ops import add_command, group
from herald.ops.client import NOT_AVAILABLE, OK, Client, OpsError, check, is_missing_route
from herald.ops.output import Column, emit_json, say, table, when

NO_CATALOGUE = "this Herald has no template catalogue"

COLUMNS: list[Column] = [
    ("id", "id"),
    ("name", "name"),
    ("language", "language"),
    ("category", "category"),
    ("status", "status"),
    ("variables", lambda t: ", ".join(t.get("variables") or [])),
    ("reason", "reason"),
    ("updated", lambda t: when(t.get("updated_at") or t.get("at"))),
]


def templates_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The catalogue's ``templates``; a sender without the catalogue lists Meta's statuses as ``items``."""
    return list(answer.get("templates", answer.get("items", [])))


def _catalogue(client: Client, method: str, path: str, **kwargs: Any) -> Any:
    response = client.raw(method, "sender", path, **kwargs)
    if is_missing_route(response):
        raise OpsError(NO_CATALOGUE, NOT_AVAILABLE, response.status_code)
    check(response, "sender")
    return response.json()


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    params = {"name": args.name, "language": args.language, "status": args.status}
    answer = _catalogue(
        client, "GET", "/v1/templates", params={k: v for k, v in params.items() if v is not None}
    )
    if args.json:
        emit_json(answer)
    elif not templates_of(answer):
        say("no templates (herald templates sync fetches them from the provider)")
    else:
        say(table(templates_of(answer), COLUMNS))
    return OK


def cmd_sync(args: argparse.Namespace, client: Client) -> int:
    body = {"channel_id": args.channel} if args.channel else {}
    answer = _catalogue(client, "POST", "/v1/templates/sync", json=body)
    if args.json:
        emit_json(answer)
    else:
        say(f"synced {answer.get('synced', 0)} template(s)")
        if templates_of(answer):
            say(table(templates_of(answer), COLUMNS))
    return OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    t = group(sub, "templates", "the WhatsApp template catalogue: list, sync from the provider")
    ls = add_command(
        t,
        "list",
        cmd_list,
        common,
        f"templates with their status and variables (exit {NOT_AVAILABLE}: {NO_CATALOGUE})",
        """
herald templates list
herald templates list --status approved --language pt_BR
herald templates list --name event_reminder --json""",
    )
    ls.add_argument("--name", help="only this template")
    ls.add_argument("--language", help="only this language (en_US, pt_BR …)")
    ls.add_argument("--status", help="only this status (approved, pending, rejected …)")

    s = add_command(
        t,
        "sync",
        cmd_sync,
        common,
        f"fetch the templates from the provider into the catalogue (exit {NOT_AVAILABLE}: {NO_CATALOGUE})",
        """
herald templates sync
herald templates sync --channel 6b1f0c1e-2a9d-4a57-8f7e-0d3c2b1a9e88""",
    )
    s.add_argument("--channel", metavar="ID", help="only this channel's provider account")
