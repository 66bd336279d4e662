"""A real PostgreSQL server for tests, started in a temp dir from Debian's ``postgresql`` package.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
``postgres`` user (created by the package) in a directory it owns. It listens on 127.0.0.1 on a
free port and on a Unix socket in its own directory, trusts local connections (the data dir is
0700 and the server is gone with the test session), and is stopped by ``stop()``.

``PG_BIN`` (or the newest ``/usr/lib/postgresql/*/bin``) names the binaries. Without them the
fixtures that use this skip, unless ``COVALENT_TEST_REQUIRE_POSTGRES=1`` (CI), where they fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port


def pg_bin() -> Path | None:
    """The directory of PostgreSQL's server binaries, if installed."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    """One running PostgreSQL server; ``url(db)`` is a libpq URL for database ``db``."""

    root: Path
    port: int
    bin: Path
    user: str
    run_as: str | None  # the OS user the server runs as (None: this process's own)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        if self.run_as is None:
            return list(args)
        return ["runuser", "-u", self.run_as, "--", *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL binary (``initdb``, ``pg_ctl``, ``psql``...) as the server's user."""
        return subprocess.run(self._cmd(str(self.bin / args[0]), *args[1:]), check=check,
                              capture_output=True, text=True, timeout=60)

    def create_database(self, name: str, template: str = "") -> str:
        """A new database (about 30 ms), empty or a copy of ``template``; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, closing whatever connections are left on it."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, database: str, sql: str) -> str:
        """Run SQL with psql; its output (unaligned, tuples only)."""
        out = self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d",
                       database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql)
        return out.stdout

    def start(self) -> None:
        # No fsync: a test server needs to survive its own restarts, not a power cut (and the
        # machine's disk is shared by every test).
        self.run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w",
                 "-t", "60", "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
                 " -c fsync=off -c full_page_writes=off -c max_connections=200", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "stop", check=False)

    def start_if_stopped(self) -> None:
        if self.run("pg_ctl", "-D", str(self.root / "data"), "status", check=False).returncode != 0:
            self.start()

    def restart(self) -> None:
        self.stop()
        self.start()


class Databases:
    """Databases for tests, each used by one test at a time and emptied for the next: taking
    one costs a TRUNCATE (milliseconds) rather than a CREATE DATABASE and its migrations."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.free: list[str] = []
        self.made = 0

    def take(self) -> tuple[str, str]:
        """(name, URL) of an empty database: schema as the last test left it, no rows."""
        if self.free:
            name = self.free.pop()
        else:
            self.made += 1
            name = f"test_{os.getpid()}_{self.made}"
            self.server.create_database(name)
        return name, self.server.url(name)

    def give_back(self, name: str, latest: int) -> None:
        """Empty it for the next test, or drop it if its schema is not at ``latest`` (a test
        of migrations or of a newer version)."""
        import psycopg

        with psycopg.connect(self.server.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = %s AND pid <> pg_backend_pid()", [name])
        with psycopg.connect(self.server.url(name), autocommit=True) as conn:
            found = {r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
            version = None
            if "schema_migrations" in found:
                version = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            if not found:
                self.free.append(name)  # never opened
                return
            if version is None or version[0] != latest:
                conn.close()
                self.server.drop_database(name)
                return
            with conn.transaction():  # DELETE: a test leaves few rows (TRUNCATE remakes files)
                for table in sorted(found - {"schema_migrations"}):
                    conn.execute(f'DELETE FROM "{table}"')
        self.free.append(name)


def start_postgres() -> PostgresServer | None:
    """Initialise and start a server in a new temp dir; None if PostgreSQL is not installed."""
    binaries = pg_bin()
    if binaries is None or not (binaries / "initdb").exists():
        return None
    run_as = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="covalent-pg-"))
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    os.chmod(root, 0o700)
    server = PostgresServer(root, free_port(), binaries, "covalent", run_as)
    try:
        server.run("initdb", "-D", str(root / "data"), "-U", server.user, "-A", "trust",
                   "-E", "UTF8", "--no-sync")
        server.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server


def remove(server: PostgresServer) -> None:
    server.stop("immediate")
    shutil.rmtree(server.root, ignore_errors=True)
