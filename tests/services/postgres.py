"""A throw-away PostgreSQL 15 cluster for the tests: started on a free port on 127.0.0.1,
stopped and removed at the end.

The server refuses to run as root, so under root the cluster is initialised and run as the
``postgres`` system user (``runuser``) in a temp folder that user owns. Durability is off
(``fsync``, ``synchronous_commit``, ``full_page_writes``): the data is thrown away anyway.
Clients connect over TCP with a password, as in production, so URLs carry one.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

BIN_DIR = Path(os.environ.get("MLAAS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SYSTEM_USER = "postgres"
START_TIMEOUT_S = 60


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL (or the psycopg driver) is not installed on this machine."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster; :meth:`start` it, :meth:`stop` it, make databases in between.

    Args:
        bin_dir: the folder of ``initdb``, ``pg_ctl`` and ``postgres``.
        user: the superuser the tests connect as (with a random password).
    """

    def __init__(self, *, bin_dir: Path = BIN_DIR, user: str = "mlaas",
                 host: str = "127.0.0.1") -> None:  # fmt: skip
        self.bin_dir = bin_dir
        self.host = host  # the address it listens on (another for other namespaces)
        self.user = user
        self.password = secrets.token_urlsafe(16)
        self.port = 0
        self.folder: Path | None = None

    @property
    def data_dir(self) -> Path:
        assert self.folder is not None, "start() the server first"
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of one database of this server."""
        return (
            f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"
        )

    def start(self) -> PostgresServer:
        """Initialise and start the cluster; raises PostgresUnavailableError when it cannot."""
        missing = [name for name in ("initdb", "pg_ctl") if not (self.bin_dir / name).exists()]
        if missing:
            raise PostgresUnavailableError(
                f"PostgreSQL 15 binaries not found in {self.bin_dir} (missing {missing}); "
                "install them with `apt-get install postgresql-15`, or point MLAAS_TEST_PG_BIN "
                "at another bin folder"
            )
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise PostgresUnavailableError(
                "the psycopg driver is missing: pip install -e '.[postgres]'"
            ) from exc
        self.folder = Path(tempfile.mkdtemp(prefix="mlaas-pg-"))
        try:
            self._init_cluster()
            self._start_server()
        except BaseException:
            self._remove_folder()
            raise
        return self

    def stop(self) -> None:
        """Stop the server at once (open connections are cut) and delete its files."""
        if self.folder is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._run(self._bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "immediate",
                      "-w", check=False)
        self._remove_folder()

    def execute(self, *statements: str) -> None:
        """Run statements as the superuser outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            dbname="postgres", autocommit=True,
        ) as connection:
            for statement in statements:
                connection.execute(statement)  # type: ignore[arg-type]

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """A new database (a copy of ``template`` when given); returns its URL."""
        clause = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{clause}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, cutting any connection still open to it (pools, Ray actors)."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _as_server_user(self) -> list[str]:
        return ["runuser", "-u", SYSTEM_USER, "--"] if os.geteuid() == 0 else []

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self._as_server_user(), *command], capture_output=True, text=True,
            timeout=START_TIMEOUT_S, cwd=self.folder,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def _init_cluster(self) -> None:
        assert self.folder is not None
        password_file = self.folder / "password"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SYSTEM_USER)
            for path in (self.folder, password_file):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            self._bin("initdb"), "-D", str(self.data_dir), "-U", self.user,
            f"--pwfile={password_file}", "--auth-local=trust", "--auth-host=scram-sha-256",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )
        password_file.unlink()
        if not self.host.startswith("127."):  # clients on the host's /24 (other namespaces)
            subnet = ".".join(self.host.split(".")[:3]) + ".0/24"
            with open(self.data_dir / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {subnet} scram-sha-256\n")

    def _start_server(self) -> None:
        assert self.folder is not None
        for _ in range(5):  # another process may take the free port before the server binds it
            self.port = _free_port()
            options = " ".join(
                f"-c {setting}" for setting in (
                    f"port={self.port}", f"listen_addresses={self.host}",
                    f"unix_socket_directories={self.folder}", "fsync=off",
                    "synchronous_commit=off", "full_page_writes=off", "max_connections=200",
                )
            )
            started = self._run(
                self._bin("pg_ctl"), "start", "-D", str(self.data_dir), "-w",
                "-t", str(START_TIMEOUT_S), "-l", str(self.folder / "server.log"),
                "-o", options, check=False,
            )
            if started.returncode == 0:
                return
        raise RuntimeError(f"PostgreSQL did not start:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        assert self.folder is not None
        log = self.folder / "server.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else ""

    def _remove_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()
