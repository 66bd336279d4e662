"""Results: ``get_result``, ``cancel`` and the ``Result`` class (also at Covalent's path,
``from covalent._results_manager import Result``)."""

from __future__ import annotations

from .result import Result

__all__ = ["Result"]
