"""``covalent._workflow.lepton.Lepton`` and ``bash`` (documented paths)."""

from __future__ import annotations

from .._lepton import Lepton, bash

__all__ = ["Lepton", "bash"]
