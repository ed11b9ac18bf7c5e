"""``herald schedules list|create|cancel`` (the scheduler's /v1/scheduled-messages)."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from herald.ops import add_command, group
from herald.ops.client import OK, USAGE, Client, OpsError
from herald.ops.messages import summary
from herald.ops.output import Column, emit_json, say, table, when

STATUSES = ["pending", "published", "completed", "missed", "cancelled", "failed"]
PRESETS = ["daily", "weekly", "monthly", "weekdays", "first_weekday_of_month", "last_weekday_of_month"]
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

COLUMNS: list[Column] = [
    ("id", "id"),
    ("status", "status"),
    ("to", "to"),
    ("message", summary),
    ("next", lambda s: when(s.get("send_at"))),
    ("repeats", lambda s: s.get("rule") or ""),
    ("fired", "fired_count"),
]


def parse_in(text: str, now: datetime | None = None) -> datetime:
    """``30s``, ``10m``, ``2h``, ``1d`` (or ``1h30m``) from now, in UTC."""
    parts = re.fullmatch(r"((\d+)([smhd]))+", text.strip())
    if not parts:
        raise OpsError(f"--in {text!r}: write a duration like 30s, 10m, 2h, 1d or 1h30m", USAGE)
    delta = timedelta()
    for amount, unit in re.findall(r"(\d+)([smhd])", text):
        delta += timedelta(**{_UNITS[unit]: int(amount)})
    return (now or datetime.now(UTC)) + delta


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"to": args.to, "text": args.text, "priority": args.priority}
    when_given = [x for x in (args.at, args.in_, args.preset or args.rrule) if x]
    if len(when_given) != 1:
        raise OpsError("say when: exactly one of --at ISO, --in DURATION, or --preset/--rrule", USAGE)
    if args.at:
        body["send_at"] = args.at
    elif args.in_:
        body["send_at"] = parse_in(args.in_).isoformat()
    else:
        if not (args.start and args.timezone):
            raise OpsError("a recurrence needs --start LOCAL_TIME and --timezone ZONE", USAGE)
        recurrence: dict[str, Any] = {"timezone": args.timezone, "start": args.start}
        for key in ("preset", "rrule", "count", "until"):
            if getattr(args, key) is not None:
                recurrence[key] = getattr(args, key)
        body["recurrence"] = recurrence
    if args.channel:
        body["channel_id"] = args.channel
    return body


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    answer = client.get(
        "scheduler", "/v1/scheduled-messages", status=args.status, recipient=args.to, limit=args.limit
    )
    if args.json:
        emit_json(answer)
    elif not answer["items"]:
        say("no scheduled messages")
    else:
        say(table(answer["items"], COLUMNS))
    return OK


def cmd_create(args: argparse.Namespace, client: Client) -> int:
    created = client.post("scheduler", "/v1/scheduled-messages", create_body(args))
    if args.json:
        emit_json(created)
    else:
        repeats = f", repeating {created['rule']}" if created.get("rule") else ""
        say(f"scheduled {created['id']} for {when(created['send_at'])}{repeats}")
        say(f"  its message will be {created['message_id']} (herald messages show ID)")
    return OK


def cmd_cancel(args: argparse.Namespace, client: Client) -> int:
    cancelled = client.delete("scheduler", f"/v1/scheduled-messages/{args.id}")
    if args.json:
        emit_json(cancelled)
    else:
        say(f"cancelled {cancelled['id']} (was due {when(cancelled['send_at'])})")
    return OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    s = group(sub, "schedules", "scheduled messages: list, create, cancel")
    ls = add_command(
        s,
        "list",
        cmd_list,
        common,
        "scheduled messages with their next occurrence",
        """
herald schedules list
herald schedules list --status pending --to +5511999998888
herald schedules list --json | jq -r '.items[].id'""",
    )
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--to", metavar="PHONE", help="only those to this recipient (E.164)")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (1–1000, default 100)")

    c = add_command(
        s,
        "create",
        cmd_create,
        common,
        "schedule a text message once (--at / --in) or on a recurrence (--preset / --rrule)",
        """
herald schedules create +5511999998888 "Your table is ready" --in 30m
herald schedules create +5511999998888 "Doors open at 9" --at 2026-12-01T08:30:00-03:00
herald schedules create +5511999998888 "Standup" --preset weekdays \\
    --start 2026-12-01T09:00:00 --timezone America/Sao_Paulo
herald schedules create +5511999998888 "Rent is due" --rrule "FREQ=MONTHLY;BYMONTHDAY=1" \\
    --start 2026-12-01T10:00:00 --timezone Europe/Lisbon --count 12""",
    )
    c.add_argument("to", help="recipient, E.164")
    c.add_argument("text", help="the text to send")
    c.add_argument("--at", metavar="ISO", help="once, at this time (ISO-8601 with an offset)")
    c.add_argument("--in", dest="in_", metavar="DURATION", help="once, this long from now (30s, 10m, 2h)")
    c.add_argument("--preset", choices=PRESETS, help="repeat: a preset")
    c.add_argument("--rrule", metavar="RULE", help='repeat: an RFC 5545 RRULE ("FREQ=WEEKLY;BYDAY=MO")')
    c.add_argument(
        "--start", metavar="LOCAL", help="repeat: first local time, no offset (2026-12-01T09:00:00)"
    )
    c.add_argument("--timezone", metavar="ZONE", help="repeat: IANA zone (America/Sao_Paulo)")
    c.add_argument("--count", type=int, help="repeat: this many times")
    c.add_argument("--until", metavar="LOCAL", help="repeat: until this local time (inclusive)")
    c.add_argument("--priority", type=int, default=5, help="1 (bulk) … 10 (urgent); default 5")
    c.add_argument("--channel", metavar="ID", help="channel id (default: the tenant's default)")

    x = add_command(
        s,
        "cancel",
        cmd_cancel,
        common,
        "cancel a pending scheduled message (and every future occurrence)",
        "herald schedules cancel 9a7c1e2f-0b3d-4e5f-8a6b-1c2d3e4f5a6b",
    )
    x.add_argument("id", help="the schedule id (from schedules list)")
