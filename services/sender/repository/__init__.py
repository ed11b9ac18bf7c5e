"""All SQL of the sender schema, by subject. Functions take the unit of work's connection and
never commit; use cases import this package as ``repo``."""

from services.sender.repository.campaigns import *  # noqa: F403
from services.sender.repository.catalogues import *  # noqa: F403
from services.sender.repository.channels import *  # noqa: F403
from services.sender.repository.claim import *  # noqa: F403
from services.sender.repository.messages import *  # noqa: F403
from services.sender.repository.messages import DUE_CHANNEL, NIL  # noqa: F401
