"""``covalent._workflow.electron.Electron`` (documented path)."""

from __future__ import annotations

from .._electron import Electron, electron, wait

__all__ = ["Electron", "electron", "wait"]
