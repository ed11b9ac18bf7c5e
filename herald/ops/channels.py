"""``herald channels list|pause|resume`` (the sender's /v1/channels)."""

from __future__ import annotations

import argparse
from typing import Any

from herald.ops import add_command, group
from herald.ops.client import OK, Client
from herald.ops.output import Column, emit_json, say, table


def session(channel: dict[str, Any]) -> str:
    """A gateway channel's session state, where the sender reports one."""
    value = channel.get("session")
    if isinstance(value, dict):
        return value.get("state") or ""
    return value or ""


COLUMNS: list[Column] = [
    ("id", "id"),
    ("name", "name"),
    ("provider", "provider"),
    ("default", "is_default"),
    ("breaker", "breaker"),
    ("session", session),
    ("per second", "throughput_per_second"),
    ("paused because", "pause_reason"),
]


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    answer = client.get("sender", "/v1/channels")
    if args.json:
        emit_json(answer)
    elif not answer["items"]:
        say("no channels (messages go out through the implicit sandbox channel)")
    else:
        say(table(answer["items"], COLUMNS))
    return OK


def _set_paused(args: argparse.Namespace, client: Client, paused: bool) -> int:
    channel = client.patch("sender", f"/v1/channels/{args.id}", {"paused": paused})
    if args.json:
        emit_json(channel)
    elif paused:
        say(f"paused {channel['name']} ({channel['id']}): its messages wait until it is resumed")
    else:
        say(f"resumed {channel['name']} ({channel['id']}): breaker {channel['breaker']}")
    return OK


def cmd_pause(args: argparse.Namespace, client: Client) -> int:
    return _set_paused(args, client, True)


def cmd_resume(args: argparse.Namespace, client: Client) -> int:
    return _set_paused(args, client, False)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    c = group(sub, "channels", "the tenant's WhatsApp numbers: list, pause, resume")
    add_command(
        c,
        "list",
        cmd_list,
        common,
        "channels with their breaker (closed, open, half_open, paused) and session",
        """
herald channels list
herald channels list --json | jq -r '.items[] | select(.breaker == "paused") | .id'""",
    )
    p = add_command(
        c,
        "pause",
        cmd_pause,
        common,
        "stop sending on a channel; its messages wait (nothing is lost)",
        "herald channels pause 6b1f0c1e-2a9d-4a57-8f7e-0d3c2b1a9e88",
    )
    p.add_argument("id", help="the channel id (from channels list)")
    r = add_command(
        c,
        "resume",
        cmd_resume,
        common,
        "send on a paused channel again (also closes its breaker)",
        "herald channels resume 6b1f0c1e-2a9d-4a57-8f7e-0d3c2b1a9e88",
    )
    r.add_argument("id", help="the channel id (from channels list)")
