"""``covalent._shared_files.logger``: the ``app_log`` executor plugins log to (the logger
``covalent``; on a worker its records go to the worker's log)."""

from __future__ import annotations

import logging
import traceback

app_log = logging.getLogger("covalent")


def log_stack_info() -> str:
    """The current stack, as text (Covalent's helper)."""
    return "".join(traceback.format_stack()[:-1])


__all__ = ["app_log", "log_stack_info"]
