"""Run the dispatcher in the foreground: ``python -m dispatcher [--port N] ...``.

Arguments override ``COVALENT_*`` variables (see ``Settings.from_env``). ``covalent start``
runs this module as a daemon.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aiohttp import web

from .app import create_app
from .settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dispatcher", description=__doc__)
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 48008)")
    p.add_argument("--data-dir", default=None, help="store location (default: user data dir)")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster workers")
    p.add_argument("--threads-per-worker", type=int, default=None)
    p.add_argument("--mem-per-worker", default=None, help="e.g. 2GB (default: auto)")
    p.add_argument("--scheduler-address", default=None,
                   help="use this Dask scheduler instead of starting a LocalCluster")
    p.add_argument("--token", default=None, help="token every request must carry")
    p.add_argument("--dashboard-address", default=None, help="default 127.0.0.1:8787")
    return p.parse_args(argv)


def settings_from_args(ns: argparse.Namespace) -> Settings:
    from pathlib import Path

    return Settings.from_env(
        host=ns.host, port=ns.port, token=ns.token,
        data_dir=Path(ns.data_dir) if ns.data_dir else None,
        address=ns.scheduler_address, n_workers=ns.workers,
        threads_per_worker=ns.threads_per_worker, memory_limit=ns.mem_per_worker,
        dashboard_address=ns.dashboard_address,
    )


def main(argv: list[str] | None = None) -> None:
    ns = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = settings_from_args(ns)
        app = create_app(settings)
    except ValueError as exc:
        print(f"covalent dispatcher: {exc}", file=sys.stderr)
        sys.exit(2)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pid_file = settings.data_dir / "server.pid"
    pid_file.write_text(str(os.getpid()))
    try:
        web.run_app(app, host=settings.host, port=settings.port, print=None,
                    access_log=None, shutdown_timeout=10)
    finally:
        if pid_file.exists() and pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()


if __name__ == "__main__":
    main()
