"""``herald send`` and ``herald messages list|show|tail`` (the sender's /v1/messages)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from herald.ops import add_command, group
from herald.ops.client import (
    FAILED,
    OK,
    SERVER_ERROR,
    TIMED_OUT,
    UNREACHABLE,
    USAGE,
    Client,
    OpsError,
)
from herald.ops.output import Column, emit_json, error, fields, say, table, when

#: how far a message has got; ``failed`` is an end of its own
PROGRESS = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "read": 4}
STATUSES = [*PROGRESS, "failed"]


def summary(message: dict[str, Any]) -> str:
    """What the message says: its text, or its kind (and template name)."""
    if message.get("text"):
        return message["text"]
    content = message.get("content") or {}
    kind = content.get("kind", "")
    if kind == "template":
        return f"[template {content.get('name')} {content.get('language', '')}]".replace(" ]", "]")
    return f"[{kind}] {content.get('body') or content.get('caption') or ''}".strip()


def waiting(message: dict[str, Any]) -> str:
    """Why a queued message waits, when the sender says so (``waiting``: reason and until)."""
    wait = message.get("waiting")
    if not isinstance(wait, dict) or not wait.get("reason"):
        return ""
    until = f" until {when(wait['until'])}" if wait.get("until") else ""
    return f"waiting: {wait['reason']}{until}"


MESSAGE_COLUMNS: list[Column] = [
    ("id", "id"),
    ("status", "status"),
    ("to", "to"),
    ("message", summary),
    ("created", lambda m: when(m.get("created_at"))),
    ("reason", lambda m: m.get("status_reason") or waiting(m)),
]


def reached(status: str, target: str) -> bool:
    if target == "failed" or status == "failed":
        return status == target
    return PROGRESS.get(status, -1) >= PROGRESS[target]


# --- send ---------------------------------------------------------------------------------------


def parse_vars(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise OpsError(f"--var {pair!r}: write it as NAME=VALUE, e.g. --var attendee_name=Ana", USAGE)
        out[name.strip()] = value
    return out


def send_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"to": args.to, "priority": args.priority}
    if args.template:
        if args.text:
            raise OpsError("give TEXT or --template, not both", USAGE)
        content: dict[str, Any] = {"kind": "template", "name": args.template, "language": args.language}
        if args.var:
            content["variables"] = parse_vars(args.var)
        body["content"] = content
    elif args.text:
        body["text"] = args.text
    else:
        raise OpsError("nothing to send: give TEXT, or --template NAME (with --var NAME=VALUE …)", USAGE)
    if args.channel:
        body["channel_id"] = args.channel
    if args.idempotency_key:
        body["idempotency_key"] = args.idempotency_key
    return body


def cmd_send(args: argparse.Namespace, client: Client) -> int:
    accepted = client.post("sender", "/v1/messages", send_body(args))
    if not args.wait:
        if args.json:
            emit_json(accepted)
        else:
            say(f"{accepted['status']} {accepted['id']}")
        return OK
    if not args.json:
        say(f"{accepted['status']} {accepted['id']}")
    code = OK
    last: dict[str, Any] = {}
    for event in follow(client, [accepted["id"]], args.wait, args.interval, args.timeout):
        if "exit" in event:
            code = ended(event)
            continue
        last = event["message"]
        if not args.json:
            say(event_line(event))
    if args.json:
        emit_json(last)
    return code


# --- list / show --------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    answer = client.get(
        "sender",
        "/v1/messages",
        status=args.status,
        to=args.to,
        channel_id=args.channel,
        created_after=args.since,
        created_before=args.before,
        limit=args.limit,
    )
    if args.json:
        emit_json(answer)
    elif not answer["items"]:
        say("no messages")
    else:
        say(table(answer["items"], MESSAGE_COLUMNS))
    return OK


SHOWN = [
    "id",
    "status",
    "status_reason",
    "to",
    "text",
    "content",
    "sent_content",
    "channel_id",
    "provider",
    "provider_message_id",
    "priority",
    "attempts",
    "error_code",
    "dead_letter",
    "idempotency_key",
    "origin",
    "created_at",
    "updated_at",
]


def cmd_show(args: argparse.Namespace, client: Client) -> int:
    message = client.get("sender", f"/v1/messages/{args.id}")
    if args.json:
        emit_json(message)
        return OK
    shown = dict(message)
    shown["created_at"], shown["updated_at"] = when(message["created_at"]), when(message["updated_at"])
    if message.get("text") and (message.get("content") or {}).get("kind") == "text":
        shown["content"] = None  # the text shorthand's own content: the text again
    if waiting(message):
        shown["waiting"] = waiting(message)
    names = [n for n in SHOWN if shown.get(n) is not None or n in ("status", "to")]
    if "waiting" in shown:
        names.insert(2, "waiting")
    say(fields(shown, names))
    history = message.get("history") or []
    if history:
        say("\nhistory:")
        rows = [{"at": when(h["at"]), "status": h["status"], "reason": h.get("reason")} for h in history]
        say(table(rows, [("at", "at"), ("status", "status"), ("reason", "reason")], max_width=100))
    return OK


# --- tail ---------------------------------------------------------------------------------------


def event_line(event: dict[str, Any]) -> str:
    was = f"(was {event['was']})" if event.get("was") else ""
    parts = [when(event["at"]), event["id"], event["status"].ljust(9), was, event.get("reason") or ""]
    return "  ".join(p for p in parts if p).rstrip()


def ended(event: dict[str, Any]) -> int:
    """A followed message that will not reach the awaited status: say so, return the exit code."""
    code = f" ({event['error_code']})" if event.get("error_code") else ""
    error(f"{event['id']} failed{code}: {event.get('reason') or 'no reason given'}")
    return int(event["exit"])


def _poll(fetch: Callable[[], Any], first: bool) -> Any:
    """One poll; after the first, an unreachable or failing service is waited out, not fatal."""
    try:
        return fetch()
    except OpsError as exc:
        if first or exc.exit_code not in (UNREACHABLE, SERVER_ERROR):
            raise
        error(f"{exc.message} (still trying)")
        return None


def follow(
    client: Client, ids: list[str], until: str | None, interval: float, timeout: float | None
) -> Iterator[dict[str, Any]]:
    """Every new history entry of the messages ``ids``, as it appears; ends when all have
    reached ``until`` (an event with ``"exit"`` says how it ended) or after ``timeout``."""
    seen: dict[str, int] = {}
    done: set[str] = set()
    deadline = time.monotonic() + timeout if timeout else None
    first = True
    while True:
        for message_id in ids:
            if message_id in done:
                continue
            message = _poll(lambda i=message_id: client.get("sender", f"/v1/messages/{i}"), first)
            if message is None:
                continue
            history = message.get("history") or [{"status": message["status"], "at": message["updated_at"]}]
            start = seen.get(message_id, 0)
            for n, entry in enumerate(history[start:], start):
                yield {
                    "id": message["id"],
                    "at": entry["at"],
                    "status": entry["status"],
                    "was": history[n - 1]["status"] if n else None,
                    "reason": entry.get("reason") or (waiting(message) if n == len(history) - 1 else ""),
                    "to": message["to"],
                    "message": message,
                }
            seen[message_id] = len(history)
            if until and (reached(message["status"], until) or message["status"] == "failed"):
                done.add(message_id)
                if message["status"] == "failed" and until != "failed":
                    yield {
                        "exit": FAILED,
                        "id": message["id"],
                        "error_code": message.get("error_code"),
                        "reason": message.get("status_reason"),
                    }
        first = False
        if until and len(done) == len(ids):
            return
        if deadline is not None and time.monotonic() >= deadline:
            if until:
                raise OpsError(f"timed out after {timeout:g}s waiting for {until}", TIMED_OUT)
            return
        time.sleep(interval)


def watch_all(client: Client, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Status changes of the tenant's latest messages: the ``--last`` newest first, then each
    new message and each change as it is seen."""
    known: dict[str, str] = {}
    first = True
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while True:
        answer = _poll(
            lambda: client.get(
                "sender", "/v1/messages", status=args.status, channel_id=args.channel, limit=args.window
            ),
            first,
        )
        items = list(reversed(answer["items"])) if answer else []
        shown = items[-args.last :] if first and args.last else ([] if first else items)
        for message in items:
            was = known.get(message["id"])
            known[message["id"]] = message["status"]
            if message in shown and was != message["status"]:
                yield {
                    "id": message["id"],
                    "at": message["updated_at"],
                    "status": message["status"],
                    "was": was,
                    "reason": message.get("status_reason") or waiting(message),
                    "to": message["to"],
                    "message": message,
                }
        first = False
        if deadline is not None and time.monotonic() >= deadline:
            return
        time.sleep(args.interval)


def cmd_tail(args: argparse.Namespace, client: Client) -> int:
    if args.until and not args.ids:
        raise OpsError("--until needs message ids to follow: herald messages tail ID … --until sent", USAGE)
    events = (
        follow(client, args.ids, args.until, args.interval, args.timeout)
        if args.ids
        else watch_all(client, args)
    )
    code = OK
    for event in events:
        if "exit" in event:
            code = ended(event)
        elif args.json:
            print(json.dumps({k: v for k, v in event.items() if k != "message"}), flush=True)
        else:
            say(event_line(event))
    sys.stdout.flush()
    return code


# --- parsers ------------------------------------------------------------------------------------


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    s = add_command(
        sub,
        "send",
        cmd_send,
        common,
        "send a WhatsApp message (POST /v1/messages)",
        """
herald send +5511999998888 "Your payment is confirmed" --priority 9
herald send +5511999998888 --template event_reminder --language en_US --var attendee_name=Ana
herald send +5511999998888 "Your code is 4417" --idempotency-key otp-42 --wait sent
herald send +5511999998888 "hi" --json | jq -r .id""",
    )
    s.add_argument("to", help="recipient, E.164 (+5511999998888)")
    s.add_argument("text", nargs="?", help="the text (or use --template)")
    s.add_argument("--priority", type=int, default=5, help="1 (bulk) … 10 (urgent); default 5")
    s.add_argument("--channel", metavar="ID", help="channel id (default: the tenant's default channel)")
    s.add_argument("--idempotency-key", metavar="KEY", help="send once per key")
    s.add_argument("--template", metavar="NAME", help="send a template instead of text")
    s.add_argument("--language", default="en_US", help="the template's language (default en_US)")
    s.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="template variable")
    s.add_argument("--wait", choices=list(PROGRESS)[1:], help="print its statuses until it reaches this one")
    s.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    s.add_argument("--timeout", type=float, default=60.0, help="with --wait: give up after SECONDS (60)")

    m = group(sub, "messages", "list, show and follow messages")
    ls = add_command(
        m,
        "list",
        cmd_list,
        common,
        "list messages, newest first",
        """
herald messages list
herald messages list --status failed --limit 20
herald messages list --to +5511999998888 --since 2026-12-01T00:00:00Z
herald messages list --json | jq -r '.items[].id'""",
    )
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--to", metavar="PHONE", help="only to this recipient (E.164)")
    ls.add_argument("--channel", metavar="ID")
    ls.add_argument("--since", metavar="ISO", help="created after (ISO-8601 with offset)")
    ls.add_argument("--before", metavar="ISO", help="created before (ISO-8601 with offset)")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (1–500, default 50)")

    sh = add_command(
        m,
        "show",
        cmd_show,
        common,
        "one message with its status history (and why it waits, if it does)",
        """
herald messages show 3f0c2a8e-1d2b-4c1e-9a57-2f1b7c9d4e11
herald messages show 3f0c2a8e-1d2b-4c1e-9a57-2f1b7c9d4e11 --json | jq .status""",
    )
    sh.add_argument("id", help="the message id (from send or list)")

    t = add_command(
        m,
        "tail",
        cmd_tail,
        common,
        "follow statuses live, printing each change as it happens (Ctrl-C stops)",
        """
herald messages tail                      # the latest messages, then every new one and change
herald messages tail --status failed      # only failures, as they happen
herald messages tail ID                   # one message's history, entry by entry
herald messages tail ID1 ID2 --until sent # exits 0 once both are sent (7 if one failed)
herald messages tail --json               # one JSON object per line""",
    )
    t.add_argument("ids", nargs="*", metavar="ID", help="follow these messages (default: all)")
    t.add_argument("--status", choices=STATUSES, help="without ids: only messages in this status")
    t.add_argument("--channel", metavar="ID", help="without ids: only this channel's messages")
    t.add_argument("--until", choices=STATUSES, help="with ids: stop when all have reached this status")
    t.add_argument("--last", type=int, default=10, help="without ids: show the N newest first (10)")
    t.add_argument("--window", type=int, default=100, help=argparse.SUPPRESS)
    t.add_argument("--interval", type=float, default=1.0, help="seconds between polls (1)")
    t.add_argument("--timeout", type=float, default=None, help="stop after SECONDS (default: never)")
