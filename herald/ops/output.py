"""What the operator commands print: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

#: a column: its header and how to get the cell from a row (a key, or a function of the row)
Column = tuple[str, str | Callable[[dict[str, Any]], Any]]


def when(value: Any) -> str:
    """An ISO-8601 timestamp as ``2026-12-03 16:30:55Z`` (UTC, to the second); "" for none."""
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def cell(value: Any, width: int | None = None) -> str:
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    text = " ".join(text.split())  # one line per row: newlines and tabs become spaces
    if width is not None and len(text) > width:
        text = text[: max(width - 1, 0)] + "…"
    return text


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], max_width: int = 48) -> str:
    """Rows under a header, each column as wide as its widest cell (capped at ``max_width``)."""
    headers = [h for h, _ in columns]
    body = [
        [cell(get(row) if callable(get) else row.get(get), max_width) for _, get in columns] for row in rows
    ]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return "\n".join(lines)


def fields(item: dict[str, Any], names: Sequence[str] | None = None) -> str:
    """``name: value`` lines of one object (all its keys, or ``names`` in that order)."""
    keys = list(names) if names is not None else list(item)
    width = max((len(k) for k in keys), default=0)
    return "\n".join(f"{k.ljust(width)}  {cell(item.get(k))}" for k in keys)


def emit_json(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False), file=out or sys.stdout, flush=True)


def say(text: str, out: TextIO | None = None) -> None:
    print(text, file=out or sys.stdout, flush=True)


def error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)
