"""The scheduler's dependencies, given explicitly to every use case (no globals, no hidden state)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from shared.crypto import DecryptionError, lookup_hash
from shared.service import ServiceRuntime

#: the CloudEvent source of everything the scheduler publishes
SOURCE = "/herald/scheduler"
#: the consumer name under which event.* deliveries are marked processed (redeliveries dropped)
EVENTS_CONSUMER = "event-reminders"


@dataclass
class Scheduler:
    """Runtime (database, broker, secrets) and the settings the use cases read."""

    runtime: ServiceRuntime
    batch_size: int
    max_sleep: float
    grace: timedelta = timedelta(hours=1)
    default_language: str = "en_US"

    def hash(self, phone: str) -> str:
        return lookup_hash(self.runtime.settings.secret_key.get_secret_value(), phone)

    def reveal(self, ciphertext: str) -> str:
        """The recipient, or a marker when it was encrypted with a key no longer configured (a
        listing must still answer)."""
        try:
            return self.runtime.secrets.decrypt(ciphertext)
        except DecryptionError:
            return "(encrypted with a key no longer configured)"
