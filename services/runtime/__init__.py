"""Process plumbing shared by every daemon: supervised background tasks and their shutdown.

No domain logic lives here."""

from .supervisor import Supervisor

__all__ = ["Supervisor"]
