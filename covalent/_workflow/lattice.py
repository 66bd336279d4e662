"""``covalent._workflow.lattice.Lattice`` (documented path)."""

from __future__ import annotations

from .._lattice import Lattice, lattice

__all__ = ["Lattice", "lattice"]
