"""``herald dead-letters list|replay`` (the sender's /v1/dead-letters)."""

from __future__ import annotations

import argparse
from typing import Any

from herald.ops import add_command, group
from herald.ops.client import OK, USAGE, Client, OpsError
from herald.ops.messages import summary
from herald.ops.output import Column, emit_json, say, table, when

COLUMNS: list[Column] = [
    ("id", "id"),
    ("to", "to"),
    ("message", summary),
    ("error", "error_code"),
    ("attempts", "attempts"),
    ("failed at", lambda m: when(m.get("updated_at"))),
    ("reason", "status_reason"),
]


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    answer = client.get(
        "sender",
        "/v1/dead-letters",
        channel_id=args.channel,
        created_after=args.since,
        created_before=args.before,
        limit=args.limit,
    )
    if args.json:
        emit_json(answer)
    elif not answer["items"]:
        say("no dead letters")
    else:
        say(table(answer["items"], COLUMNS))
    return OK


def cmd_replay(args: argparse.Namespace, client: Client) -> int:
    filtered = args.all or args.channel or args.error_code or args.since or args.before
    if bool(args.ids) == bool(filtered):
        raise OpsError(
            "give dead letter ids, or --all / a filter (--channel, --error-code, --since, --before)", USAGE
        )
    replayed: list[str] = []
    if args.ids:
        for message_id in args.ids:
            replayed += client.post("sender", f"/v1/dead-letters/{message_id}/replay")["replayed"]
    else:
        body: dict[str, Any] = {
            "channel_id": args.channel,
            "error_code": args.error_code,
            "created_after": args.since,
            "created_before": args.before,
            "limit": args.limit,
        }
        replayed = client.post(
            "sender", "/v1/dead-letters/replay", {k: v for k, v in body.items() if v is not None}
        )["replayed"]
    if args.json:
        emit_json({"replayed": replayed})
    else:
        say(f"replayed {len(replayed)} dead letter(s)" + "".join(f"\n  {i}" for i in replayed))
    return OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    d = group(sub, "dead-letters", "messages that failed for good: list them, send them again")
    ls = add_command(
        d,
        "list",
        cmd_list,
        common,
        "dead letters with their error and reason, newest first",
        """
herald dead-letters list
herald dead-letters list --channel 6b1f0c1e-2a9d-4a57-8f7e-0d3c2b1a9e88 --limit 10
herald dead-letters list --json | jq -r '.items[].id'""",
    )
    ls.add_argument("--channel", metavar="ID")
    ls.add_argument("--since", metavar="ISO", help="created after (ISO-8601 with offset)")
    ls.add_argument("--before", metavar="ISO", help="created before (ISO-8601 with offset)")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (1–500, default 50)")

    r = add_command(
        d,
        "replay",
        cmd_replay,
        common,
        "send dead letters again: the ones named, or every one matching a filter",
        """
herald dead-letters replay 3f0c2a8e-1d2b-4c1e-9a57-2f1b7c9d4e11
herald dead-letters replay --error-code 131026
herald dead-letters replay --all""",
    )
    r.add_argument("ids", nargs="*", metavar="ID", help="dead letters to replay")
    r.add_argument("--all", action="store_true", help="every dead letter (up to --limit)")
    r.add_argument("--channel", metavar="ID", help="only this channel's")
    r.add_argument("--error-code", metavar="CODE", help="only those that failed with this code")
    r.add_argument("--since", metavar="ISO", help="created after (ISO-8601 with offset)")
    r.add_argument("--before", metavar="ISO", help="created before (ISO-8601 with offset)")
    r.add_argument("--limit", type=int, default=1000, help="with a filter: at most this many (1000)")
