"""E.164 phone numbers, validated with Google's libphonenumber rules: the one normalisation every
service uses, so a number hashes the same for opt-outs, windows and pair limits whichever way it
arrived (a webhook's ``wa_id``, a send request, a contact mapping, an attendee list)."""

from __future__ import annotations

import contextlib
from typing import Annotated

import phonenumbers
from pydantic import AfterValidator


class InvalidPhoneNumber(ValueError):
    pass


def normalize_e164(raw: str) -> str:
    """Return the number in E.164 form or raise with a message that says what to fix.

    Only international form is accepted ("+" and the country code): without a country, a local
    number is ambiguous and guessing one would message a stranger.

    Brazilian mobile numbers written without the ninth digit (+55 11 8765-4321, as WhatsApp still
    reports many older accounts' ``wa_id``) become the nine-digit form (+55 11 98765-4321): both
    reach the same person. A landline (first digit 2-5) keeps its eight digits.
    """
    try:
        return _normalize(raw)
    except InvalidPhoneNumber:
        digits = raw.strip().replace(" ", "").replace("-", "").replace("(", "").replace(")", "")
        if digits.startswith("+55") and len(digits) == 13 and digits[5] in "6789":
            with contextlib.suppress(InvalidPhoneNumber):
                return _normalize(digits[:5] + "9" + digits[5:])
        raise


def _normalize(raw: str) -> str:
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
