"""E.164 phone numbers, validated with Google's libphonenumber rules."""

from __future__ import annotations

from typing import Annotated

import phonenumbers
from pydantic import AfterValidator


class InvalidPhoneNumber(ValueError):
    pass


def normalize_e164(raw: str) -> str:
    """Return the number in E.164 form or raise with a message that says what to fix.

    Only international form is accepted ("+" and the country code): without a country, a local
    number is ambiguous and guessing one would message a stranger.
    """
    text = raw.strip()
    if not text.startswith("+"):
        raise InvalidPhoneNumber(
            f"{text!r} is not in E.164 form: start with + and the country code, e.g. +5511999998888"
        )
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"{text!r} is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(
            f"{text!r} is not a valid phone number for its country code "
            f"+{parsed.country_code}: check the number of digits"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _validate(value: str) -> str:
    return normalize_e164(value)


#: a pydantic field type: validates and normalises to E.164
E164 = Annotated[str, AfterValidator(_validate)]
