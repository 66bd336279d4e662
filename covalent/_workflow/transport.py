"""``covalent._workflow.transport.TransportableObject`` (the path plugins import it from)."""

from __future__ import annotations

from .._transport import TransportableObject

__all__ = ["TransportableObject"]
