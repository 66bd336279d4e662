"""Lepton decorators (``ct.leptons.bash``); the class is ``ct.Lepton``."""

from __future__ import annotations

from .._lepton import bash

__all__ = ["bash"]
