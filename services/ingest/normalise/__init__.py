"""Provider webhook bodies → Herald events. Pure: no I/O.

One module per provider (``meta``, ``chatwoot``, ``evolution``, ``waha``), what they share in
``common``; everything callers use is imported from here.

Each provider function takes the parsed JSON body and a ``Context`` and returns ``Normalised``:
the facts found (each with the dedupe key that identifies it at the provider), and whether the
whole body was understood. A body or a part of it that Herald does not understand is not an
error: the caller stores the body flagged ``unrecognised`` with the notes, and publishes the rest.

Dedupe keys (unique per tenant and provider): ``m:<message id>`` for a message,
``s:<message id>:<status>`` for a status, ``o:<message id>`` for an opt-out/in keyword in it,
``t:<template id>:<event>:<time>`` for a template status, ``p:<wa_id>:<value>:<time>`` for a
marketing preference.
"""

from __future__ import annotations

from services.ingest.normalise.chatwoot import chatwoot
from services.ingest.normalise.common import (
    DEFAULT_KEYWORDS,
    DEFAULT_OPT_IN,
    DEFAULT_OPT_OUT,
    MEDIA_KINDS,
    Context,
    Fact,
    Keywords,
    Normalised,
    keyword_form,
)
from services.ingest.normalise.evolution import evolution
from services.ingest.normalise.meta import meta
from services.ingest.normalise.waha import waha

NORMALISERS = {"meta": meta, "chatwoot": chatwoot, "evolution": evolution, "waha": waha}

__all__ = [
    "DEFAULT_KEYWORDS",
    "DEFAULT_OPT_IN",
    "DEFAULT_OPT_OUT",
    "MEDIA_KINDS",
    "NORMALISERS",
    "Context",
    "Fact",
    "Keywords",
    "Normalised",
    "chatwoot",
    "evolution",
    "keyword_form",
    "meta",
    "waha",
]
