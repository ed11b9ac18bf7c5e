"""Structured JSON logging with masking.

Invariant: no log line carries a raw phone number, credential or message body. Known sensitive
keys are masked by name, and any string value is scanned for phone numbers and bearer tokens, so a
phone number inside an exception message is masked too.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from shared.tracing import add_trace_ids

SENSITIVE_KEYS = frozenset(
    {
        "text",
        "body",
        "content",
        "caption",
        "message_body",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "authorization",
        "password",
        "secret",
        "app_secret",
        "verify_token",
        "encryption_keys",
        "secret_key",
    }
)
PHONE_KEYS = frozenset({"to", "phone", "from", "from_phone", "recipient", "customer_phone", "wa_id"})

_PHONE_RE = re.compile(r"(?<![\w-])\+?\d[\d ()-]{7,}\d(?![\w-])")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_KEY_RE = re.compile(r"\bhk_[A-Za-z0-9_-]{8,}")


def mask_phone(value: str) -> str:
    """Keep only the last two digits: enough to tell two recipients apart in a log."""
    digits = re.sub(r"\D", "", value)
    if len(digits) < 4:
        return "***"
    return f"+***{digits[-2:]}"


def mask_string(value: str) -> str:
    value = _BEARER_RE.sub(r"\1***", value)
    value = _KEY_RE.sub("hk_***", value)
    return _PHONE_RE.sub(lambda m: mask_phone(m.group(0)), value)


def _mask(key: str, value: Any) -> Any:
    lowered = key.lower()
    if lowered in SENSITIVE_KEYS:
        return "***" if value not in (None, "") else value
    if lowered in PHONE_KEYS and isinstance(value, str):
        return mask_phone(value)
    if isinstance(value, str):
        return mask_string(value)
    if isinstance(value, dict):
        return {k: _mask(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(key, v) for v in value]
    return value


def mask_sensitive(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: masks by key name and scans every string value."""
    for key in list(event_dict):
        if key == "event" and isinstance(event_dict[key], str):
            event_dict[key] = mask_string(event_dict[key])
        elif key not in ("timestamp", "level", "logger", "service"):
            event_dict[key] = _mask(key, event_dict[key])
    return event_dict


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library (uvicorn, aio-pika, FastStream) through one JSON
    renderer with masking applied to both."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        add_trace_ids,
        mask_sensitive,
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # uvicorn installs its own handlers; make it use ours
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
