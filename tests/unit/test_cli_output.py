"""What the operator commands print, and how they read their arguments."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from herald.cli import parser
from herald.ops.client import USAGE, OpsError
from herald.ops.messages import event_line, reached, send_body, summary
from herald.ops.output import cell, fields, table, when
from herald.ops.schedules import create_body, parse_in


def test_table_aligns_columns_under_upper_case_headers() -> None:
    rows = [{"id": "a1", "status": "sent", "n": 3}, {"id": "b", "status": "delivered", "n": None}]
    assert table(rows, [("id", "id"), ("status", "status"), ("count", "n")]).splitlines() == [
        "ID  STATUS     COUNT",
        "a1  sent       3",
        "b   delivered",
    ]


def test_cells_are_one_line_and_capped() -> None:
    assert cell("two\nlines\there") == "two lines here"
    assert cell("x" * 60, 10) == "x" * 9 + "…"
    assert cell(True) == "yes" and cell(None) == "" and cell({"a": 1}) == '{"a": 1}'
    row = table([{"t": "long " * 20}], [("text", "t")], max_width=12).splitlines()[1]
    assert row == "long long l…"


def test_fields_and_times() -> None:
    assert fields({"id": "m1", "status": "sent"}).splitlines() == ["id      m1", "status  sent"]
    assert when("2026-12-03T13:30:55.123-03:00") == "2026-12-03 16:30:55Z"
    assert when(None) == "" and when("soon") == "soon"


def test_message_summaries() -> None:
    assert summary({"text": "hello"}) == "hello"
    template = {"kind": "template", "name": "order_update", "language": "en_US"}
    assert summary({"text": None, "content": template}) == "[template order_update en_US]"
    assert summary({"content": {"kind": "image", "caption": "menu"}}) == "[image] menu"


def test_tail_lines_show_the_change() -> None:
    event = {"at": "2026-12-03T16:30:55+00:00", "id": "m1", "status": "sent", "was": "sending", "reason": ""}
    assert event_line(event) == "2026-12-03 16:30:55Z  m1  sent       (was sending)"
    first = {**event, "status": "queued", "was": None, "reason": "waiting: quiet_hours"}
    assert event_line(first) == "2026-12-03 16:30:55Z  m1  queued     waiting: quiet_hours"


def test_reached_follows_the_statuses_order() -> None:
    assert reached("delivered", "sent") and reached("sent", "sent") and not reached("sending", "sent")
    assert not reached("failed", "sent") and reached("failed", "failed") and not reached("read", "failed")


def args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(list(argv))


def test_send_builds_text_or_template_bodies() -> None:
    assert send_body(args("send", "+5511999998888", "hi", "--priority", "9")) == {
        "to": "+5511999998888",
        "priority": 9,
        "text": "hi",
    }
    body = send_body(args("send", "+551199", "--template", "event_reminder", "--var", "attendee_name=Ana"))
    assert body["content"] == {
        "kind": "template",
        "name": "event_reminder",
        "language": "en_US",
        "variables": {"attendee_name": "Ana"},
    }
    for bad in (
        ["send", "+551199"],
        ["send", "+551199", "hi", "--template", "t"],
        ["send", "+55", "--template", "t", "--var", "x"],
    ):
        with pytest.raises(OpsError) as exc:
            send_body(args(*bad))
        assert exc.value.exit_code == USAGE


def test_schedules_read_when() -> None:
    now = datetime(2026, 12, 3, 16, 0, tzinfo=UTC)
    assert parse_in("1h30m", now) == datetime(2026, 12, 3, 17, 30, tzinfo=UTC)
    assert parse_in("2d", now).day == 5
    with pytest.raises(OpsError):
        parse_in("soon", now)
    recurring = create_body(
        args("schedules", "create", "+551199", "Standup", "--preset", "weekdays", "--start", "2026-12-01T09:00:00",
             "--timezone", "Europe/Lisbon", "--count", "5")
    )  # fmt: skip
    assert recurring["recurrence"] == {
        "timezone": "Europe/Lisbon",
        "start": "2026-12-01T09:00:00",
        "preset": "weekdays",
        "count": 5,
    }
    with pytest.raises(OpsError):
        create_body(args("schedules", "create", "+551199", "x", "--in", "1h", "--at", "2026-12-01T09:00:00Z"))
    with pytest.raises(OpsError):
        create_body(args("schedules", "create", "+551199", "x", "--preset", "daily"))


def test_every_operator_command_has_examples_in_its_help() -> None:
    p = parser()
    commands = [
        ["send"],
        *(["messages", c] for c in ("list", "show", "tail")),
        *(["dead-letters", c] for c in ("list", "replay")),
        *(["schedules", c] for c in ("list", "create", "cancel")),
        *(["channels", c] for c in ("list", "pause", "resume")),
        *(["templates", c] for c in ("list", "sync")),
    ]
    for command in commands:
        sub = p
        for word in command:
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
        assert "examples:\n  herald " + command[0] in (sub.epilog or ""), command
    assert "exit codes:" in (p.epilog or "") and "3    not found" in (p.epilog or "")
