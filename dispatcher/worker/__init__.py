"""The code Dask workers run for the dispatcher, apart from the server.

A worker imports ``dispatcher.protocol``, this package and the SDK, nothing else of the
dispatcher: ``run`` (a node's task), ``capture`` (per-thread stdout/stderr), ``interrupts``
(cancelling a running node), ``announce`` (RUNNING for long nodes), ``contact`` (how to reach
the dispatcher) and ``sublattice`` (a sublattice node as a child dispatch).
"""
