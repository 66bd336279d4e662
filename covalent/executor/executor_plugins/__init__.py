"""Covalent's module paths of its built-in executors (``covalent.executor.executor_plugins.dask``
and so on), kept so documented imports work."""
