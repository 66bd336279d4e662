"""``covalent._workflow.transportable_object.TransportableObject`` (documented path)."""

from __future__ import annotations

from .._transport import TransportableObject

__all__ = ["TransportableObject"]
