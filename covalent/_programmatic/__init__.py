"""Covalent's ``covalent._programmatic``: the CLI's start/stop as functions."""

from __future__ import annotations

from .commands import covalent_start, covalent_stop, is_covalent_running

__all__ = ["covalent_start", "covalent_stop", "is_covalent_running"]
