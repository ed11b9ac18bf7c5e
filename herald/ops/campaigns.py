"""``herald campaign send|list|show|pause|resume|cancel`` (the sender's /v1/campaigns).

``send --csv FILE`` is resumable: the campaign and each page of the file carry an
Idempotency-Key derived from the file's content and the template, so running the same command
again after Ctrl-C (or a dropped connection) finds the same campaign, and every page already
accepted is answered as before and queues nothing. The file is checked whole first (its header
against the template's variables, every row's width and values), so a bad row stops the run
before anything is sent."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import re
import sys
from pathlib import Path
from typing import Any

from herald.ops import add_command, group
from herald.ops.client import (
    INTERRUPTED,
    NOT_AVAILABLE,
    OK,
    REFUSED,
    Client,
    OpsError,
    check,
    is_missing_route,
)
from herald.ops.output import Column, emit_json, error, fields, say, table, when

NO_CAMPAIGNS = "this Herald has no campaigns"
PAGE = 1000

COLUMNS: list[Column] = [
    ("id", "id"),
    ("name", "name"),
    ("template", lambda c: f"{c['template']['name']} ({c['template']['language']})"),
    ("state", "state"),
    ("accepted", "accepted"),
    ("refused", "refused"),
    ("created", lambda c: when(c.get("created_at"))),
]
COUNTED = ("queued", "held", "sending", "sent", "delivered", "read", "failed", "cancelled")


def _api(client: Client, method: str, path: str, **kwargs: Any) -> Any:
    response = client.raw(method, "sender", path, **kwargs)
    if is_missing_route(response):
        raise OpsError(NO_CAMPAIGNS, NOT_AVAILABLE, response.status_code)
    check(response, "sender")
    return response.json()


# --- the CSV ----------------------------------------------------------------------------------


def read_csv(path: Path, variables: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """(row number in the file, recipient) for every row; ``OpsError`` (REFUSED) naming every bad
    row and column, before anything is sent. The header is row 1."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise OpsError(f"{path}: no such file", REFUSED) from None
    except UnicodeDecodeError as exc:
        raise OpsError(f"{path} is not UTF-8 (byte {exc.start}): save it as UTF-8", REFUSED) from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    problems: list[str] = []
    if "to" not in header:
        problems.append("row 1: no 'to' column (the recipient, E.164)")
    problems += [f"row 1: no column {v!r}, a variable of the template" for v in variables if v not in header]
    problems += [
        f"row 1: {h!r} is not a variable of the template, which has {variables}"
        for h in header
        if h != "to" and h not in variables
    ]
    if problems:
        raise OpsError(f"{path}: " + "; ".join(problems) + "; nothing was sent", REFUSED)
    out: list[tuple[int, dict[str, Any]]] = []
    for number, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            problems.append(f"row {number}: {len(row)} fields, the header has {len(header)}")
            continue
        values = {h: c.strip() for h, c in zip(header, row, strict=True)}
        problems += [f"row {number}, column {h!r}: empty" for h in header if not values[h]]
        to = values.pop("to")
        out.append((number, {"to": to, "variables": values}))
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise OpsError(f"{path}: " + "; ".join(problems[:10]) + more + "; nothing was sent", REFUSED)
    if not out:
        raise OpsError(f"{path} has a header but no recipients", REFUSED)
    return out


def run_key(data: bytes, template: str, language: str, channel: str | None) -> str:
    """The campaign's Idempotency-Key: the same file for the same template is the same run."""
    h = hashlib.sha256(data)
    h.update(f"\0{template}\0{language}\0{channel or ''}".encode())
    return f"cli-{h.hexdigest()[:40]}"


class Progress:
    """A one-line bar on stderr when it is a terminal; a line per page otherwise."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet, self.tty = total, quiet, sys.stderr.isatty()

    def show(self, done: int, queued: int, refused: int, replayed: int) -> None:
        if self.quiet:
            return
        width = 30
        filled = width * done // max(self.total, 1)
        again = f", {replayed:,} already sent before" if replayed else ""
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {done:,}/{self.total:,} rows: "
            f"{queued:,} queued, {refused:,} refused{again}"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr, flush=True)


def cmd_send(args: argparse.Namespace, client: Client) -> int:
    path = Path(args.csv)
    found = _api(client, "GET", "/v1/templates", params={"name": args.template, "language": args.language})
    templates = [t for t in found.get("templates", []) if t["name"] == args.template]
    if not templates:
        raise OpsError(
            f"no template {args.template!r} in {args.language} in the catalogue "
            "(herald templates list shows them; herald templates sync fetches them)",
            REFUSED,
        )
    rows = read_csv(path, list(templates[0].get("variables") or []))
    key = run_key(path.read_bytes(), args.template, args.language, args.channel)
    body: dict[str, Any] = {
        "name": args.name or path.name,
        "template": {"name": args.template, "language": args.language},
        "priority": args.priority,
        "recipients": [],
    }
    if args.channel:
        body["channel_id"] = args.channel
    if args.send_at:
        body["send_at"] = args.send_at
    response = client.raw("POST", "sender", "/v1/campaigns", json=body, headers={"Idempotency-Key": key})
    check(response, "sender")
    campaign = response.json()
    cid = campaign["id"]
    resumed = response.headers.get("Idempotent-Replayed") == "true"
    if not args.json:
        say(f"campaign {cid}" + (" (resuming the earlier run of this file)" if resumed else ""))
    progress = Progress(len(rows), args.json)
    refusals: list[dict[str, Any]] = []
    size = args.page_size
    try:
        queued, refused, replayed = _pages(client, cid, key, rows, size, path, progress, refusals)
    except KeyboardInterrupt:
        progress.end()
        error(f"interrupted: run the same command again to resume campaign {cid}; nothing is sent twice")
        return INTERRUPTED
    progress.end()
    final = _api(client, "GET", f"/v1/campaigns/{cid}")
    if args.json:
        emit_json({"campaign": final, "queued": queued, "refused": refused, "refusals": refusals})
        return OK
    say(
        f"{queued:,} queued, {refused:,} refused"
        + (f" ({replayed:,} were queued by an earlier run)" if replayed else "")
    )
    if refusals:
        shown = refusals[:20]
        say(table(shown, [("row", "row"), ("to", "to"), ("reason", "reason"), ("detail", "detail")]))
        if len(refusals) > len(shown):
            say(f"… and {len(refusals) - len(shown)} more (--json lists them all)")
    say(f"follow it: herald campaign show {cid}")
    return OK


def _pages(
    client: Client,
    cid: str,
    key: str,
    rows: list[tuple[int, dict[str, Any]]],
    size: int,
    path: Path,
    progress: Progress,
    refusals: list[dict[str, Any]],
) -> tuple[int, int, int]:
    """Post the rows in pages, each with its own Idempotency-Key; (queued, refused, replayed)."""
    queued = refused = replayed = 0
    for start in range(0, len(rows), size):
        page = rows[start : start + size]
        response = client.raw(
            "POST",
            "sender",
            f"/v1/campaigns/{cid}/recipients",
            json={"recipients": [r for _, r in page]},
            headers={"Idempotency-Key": f"{key}-rows-{start}-{size}"},
        )
        if response.status_code == 422:
            raise OpsError(_in_file_terms(response, page, path), REFUSED, 422)
        check(response, "sender")
        answer = response.json()
        if response.headers.get("Idempotent-Replayed") == "true":
            replayed += answer["queued"]
        queued += answer["queued"]
        refused += answer["refused"]
        for r in answer["refusals"]:
            refusals.append({**r, "row": page[r["index"]][0]})
        progress.show(start + len(page), queued, refused, replayed)
    return queued, refused, replayed


def _in_file_terms(response: Any, page: list[tuple[int, dict[str, Any]]], path: Path) -> str:
    """The API's 422 with ``recipients.<i>`` turned into the file's row numbers."""
    try:
        message = response.json().get("message", response.text)
    except ValueError:
        message = response.text
    return f"{path}: " + re.sub(
        r"recipients\.(\d+)",
        lambda m: f"row {page[int(m.group(1))][0]}" if int(m.group(1)) < len(page) else m.group(0),
        message,
    )


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    answer = _api(client, "GET", "/v1/campaigns", params={"limit": args.limit})
    if args.json:
        emit_json(answer)
    elif not answer["items"]:
        say("no campaigns (herald campaign send --csv FILE … starts one)")
    else:
        say(table(answer["items"], COLUMNS))
    return OK


def cmd_show(args: argparse.Namespace, client: Client) -> int:
    campaign = _api(client, "GET", f"/v1/campaigns/{args.id}")
    if args.json:
        emit_json(campaign)
        return OK
    flat = {
        **{k: campaign[k] for k in ("id", "name", "state", "priority", "accepted", "refused")},
        "template": f"{campaign['template']['name']} ({campaign['template']['language']})",
        "channel_id": campaign["channel_id"],
        "send_at": when(campaign.get("send_at")),
        "created": when(campaign.get("created_at")),
    }
    say(fields(flat, ["id", "name", "template", "state", "channel_id", "priority", "send_at", "created"]))
    say(fields({"accepted": campaign["accepted"], "refused": campaign["refused"]}))
    counts = campaign["counts"]
    say("  ".join(f"{s} {counts.get(s, 0):,}" for s in COUNTED))
    return OK


def _transition(verb: str) -> Any:
    def run(args: argparse.Namespace, client: Client) -> int:
        answer = _api(client, "POST", f"/v1/campaigns/{args.id}/{verb}")
        if args.json:
            emit_json(answer)
        else:
            what = {"pause": "held", "resume": "released", "cancel": "cancelled"}[verb]
            say(f"campaign {answer['id']} is {answer['state']}: {answer['messages']:,} message(s) {what}")
        return OK

    return run


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    c = group(sub, "campaign", "one template to many recipients: send a CSV, follow, pause, resume, cancel")
    s = add_command(
        c,
        "send",
        cmd_send,
        common,
        "send a catalogue template to every row of a CSV (header: to, then the template's "
        "variables); run it again after an interruption to resume: nothing is sent twice",
        """
herald campaign send --csv attendees.csv --template concert_reminder --language en_US
herald campaign send --csv list.csv --template promo --language pt_BR --send-at 2026-12-24T09:00:00-03:00
herald campaign send --csv list.csv --template promo --language pt_BR --json""",
    )
    s.add_argument(
        "--csv", required=True, metavar="FILE", help="the recipients: a header with to and the variables"
    )
    s.add_argument("--template", required=True, help="the template's name in the catalogue")
    s.add_argument("--language", required=True, help="the template's language (en_US, pt_BR …)")
    s.add_argument("--channel", metavar="ID", help="the channel (default: the tenant's default)")
    s.add_argument("--priority", type=int, default=1, help="1 (bulk, the default) … 10")
    s.add_argument("--send-at", metavar="ISO", help="not before this time (ISO 8601 with an offset)")
    s.add_argument("--name", help="the campaign's name (default: the file's name)")
    s.add_argument(
        "--page-size",
        type=int,
        default=PAGE,
        choices=range(1, PAGE + 1),
        metavar="N",
        help=f"rows per request (≤ {PAGE})",
    )

    ls = add_command(
        c, "list", cmd_list, common, "the tenant's campaigns, newest first", "herald campaign list"
    )
    ls.add_argument("--limit", type=int, default=50)
    show = add_command(
        c,
        "show",
        cmd_show,
        common,
        "a campaign with its messages counted by status",
        "herald campaign show 6b1f0c1e-2a9d-4a57-8f7e-0d3c2b1a9e88",
    )
    show.add_argument("id")
    for verb, help in (
        ("pause", "hold every message not yet sent until resume"),
        ("resume", "send the held messages"),
        ("cancel", "fail every message not yet sent (campaign_cancelled); for good"),
    ):
        p = add_command(
            c,
            verb,
            _transition(verb),
            common,
            help,
            f"herald campaign {verb} 6b1f0c1e-2a9d-4a57-8f7e-0d3c2b1a9e88",
        )
        p.add_argument("id")
