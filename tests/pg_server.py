"""A PostgreSQL server for the store tests, and a fresh database per test on it.

`WACALL_TEST_DATABASE_URL` names a server to use (its role needs CREATEDB); otherwise, where Debian's
PostgreSQL binaries are installed, a throwaway cluster is started once per test session in a temporary
directory, listening on a Unix socket only: a socket works inside the network namespace `.ci/run` runs the
suite in, and nothing else on the machine can reach it. fsync is off, as nothing here must survive a crash.
As root the cluster runs as the `postgres` user (PostgreSQL refuses to run as root).

Each test gets a migrated database of its own, taken from a pool: a database a test is done with is emptied
(TRUNCATE, its connections ended) and handed to the next test, as CREATE DATABASE takes a few hundred
milliseconds on a busy machine and TRUNCATE a few. New ones are copied from a migrated template, so no test
pays for the migrations unless it asks for an empty database.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

ENV_URL = "WACALL_TEST_DATABASE_URL"
TEMPLATE = "wacall_test_template"


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


@dataclass
class PgServer:
    """Where the server is (`url` reaches its `postgres` database) and the databases made on it."""

    url: str
    cleanup: list[str] = field(default_factory=list)
    _free: list[str] = field(default_factory=list)
    _names: Iterator[int] = field(default_factory=itertools.count)
    _template_ready: bool = False

    def url_for(self, dbname: str) -> str:
        """The server's URL naming another database (a URL, as WACALL_DATABASE_URL must be)."""
        return urlunsplit(urlsplit(self.url)._replace(path=f"/{dbname}"))

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # test-made names only

    def new_database(self, *, migrated: bool = True) -> str:
        """A fresh database's URL: migrated (from the template) or empty."""
        if migrated and not self._template_ready:
            self._make_template()
        name = f"wacall_test_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE if migrated else 'template0'}")
        self.cleanup.append(name)
        return self.url_for(name)

    def checkout(self) -> str:
        """A migrated, empty database no other test is using."""
        return self._free.pop() if self._free else self.new_database()

    def checkin(self, url: str) -> None:
        """Back to the pool, emptied and at the current schema version; dropped if it cannot be reset."""
        import psycopg

        from agent.store.sqlite import SCHEMA_VERSION

        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                tables = [
                    row[0]
                    for row in conn.execute(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_version'"
                    )
                ]
                conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")  # type: ignore[arg-type]
                conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
        except psycopg.Error:
            self.drop(url)
            return
        self._free.append(url)

    def drop(self, url: str) -> None:
        import psycopg.conninfo

        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if name in self.cleanup:
            self.cleanup.remove(name)

    def _make_template(self) -> None:
        from agent.store.postgres import PostgresStore

        self.admin(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        self.admin(f"CREATE DATABASE {TEMPLATE} TEMPLATE template0")
        PostgresStore(self.url_for(TEMPLATE)).close()
        self._template_ready = True


def skip_reason() -> str | None:
    """Why no PostgreSQL server can be had here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (reinstall wacall from the lock)"
    if os.environ.get(ENV_URL):
        return None
    if _bin_dir() is None:
        return f"no PostgreSQL: set {ENV_URL} or install Debian's postgresql package"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run a throwaway PostgreSQL as"
    return None


@contextmanager
def pg_server() -> Iterator[PgServer]:
    """The session's server: the one named in the environment, or a throwaway cluster."""
    if os.environ.get(ENV_URL):
        server = PgServer(os.environ[ENV_URL])
        try:
            yield server
        finally:
            for name in [*server.cleanup, TEMPLATE]:
                server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        return
    with _throwaway_cluster() as url:
        yield PgServer(url)


@contextmanager
def _throwaway_cluster() -> Iterator[str]:
    bin_dir = _bin_dir()
    assert bin_dir is not None
    as_user: list[str] = []
    # Directly under /tmp whatever TMPDIR says: the postgres user must reach it, and a socket path is short.
    root = tempfile.mkdtemp(prefix="wacall-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    data = os.path.join(root, "data")
    run = {"check": True, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    try:
        _run([*as_user, f"{bin_dir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
              "--no-locale", "--no-sync"], run)  # fmt: skip
        options = f"-c listen_addresses='' -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        _run([*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-l", f"{root}/log", "-w", "-s", "-o", options, "start"], run)
        try:
            yield f"postgresql://postgres@/postgres?host={quote(root)}"
        finally:
            subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-s", "-m", "immediate", "stop"], check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(argv: list[str], kwargs: dict[str, object]) -> None:
    try:
        subprocess.run(argv, **kwargs)  # type: ignore[call-overload]
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{' '.join(argv[:5])}… failed:\n{exc.stdout}") from exc
