"""A throwaway PostgreSQL cluster for tests: initdb in a temp folder, a free loopback port, its
socket in /tmp, stopped by pid.

The cluster is real (Debian's PostgreSQL server binaries), so the store's contract suite and the
end-to-end cluster tests run against what users run. As root, ``initdb``, ``pg_ctl`` and the
server run as the ``postgres`` user (PostgreSQL refuses to run as root). Where no server binaries
exist, :func:`find_binaries` returns None and the fixtures skip with the reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "crawlsched"


def find_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None when PostgreSQL's
    server is not installed (only its client, say)."""
    candidates = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """One running server. ``dsn`` is a libpq URL for database ``postgres`` as the superuser."""

    bin: Path
    root: Path  # the temp folder: data/, sock/, log
    port: int
    _as_postgres: bool = field(default=False, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _cmd(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else args

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run(self._cmd(args), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                               f"\n{self.log_tail()}")
        return done

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def init(self) -> None:
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                   "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.socket_dir}'\n"
                       "fsync = off\nfull_page_writes = off\nmax_connections = 200\n"
                       # a connection refused during a shutdown waits this long for its startup
                       # packet at most (the default 60 s is as long as pg_ctl's whole wait)
                       "authentication_timeout = 10s\n")

    def start(self) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60", "start"])

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the server comes back on the same port."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60",
                   "-m", "fast", "restart"])

    def children(self) -> str:
        """The server's processes as ``ps`` shows them (what a shutdown that does not end waits for)."""
        pid = self.pid()
        if pid is None:
            return "(no postmaster.pid)"
        done = subprocess.run(["ps", "-o", "pid,stat,etime,args", "--ppid", str(pid), "-p", str(pid)],
                              capture_output=True, text=True)
        return done.stdout.strip()

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown by pid (SIGINT), then SIGKILL if it does not go; waits until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 5)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through Debian's psql (no driver needed); returns its unaligned output."""
        psql = self.bin / "psql"
        exe = str(psql) if psql.is_file() else (shutil.which("psql") or "psql")
        return self._run([exe, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                          "-p", str(self.port), "-U", SUPERUSER, "-d", dbname, "-c", sql]).stdout.strip()


def start_cluster(bin_dir: Path | None = None) -> Cluster:
    """initdb and start a new cluster in a new folder under /tmp; the caller stops it and removes
    ``cluster.root``."""
    bin_dir = bin_dir or find_binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL's server binaries (initdb, pg_ctl, postgres) are not installed")
    root = Path(tempfile.mkdtemp(prefix="crawlsched-pg-", dir="/tmp"))
    as_postgres = os.geteuid() == 0
    (root / "sock").mkdir()
    if as_postgres:
        user = pwd.getpwnam("postgres")
        for path in (root, root / "sock"):
            os.chown(path, user.pw_uid, user.pw_gid)
    cluster = Cluster(bin_dir, root, free_port(), as_postgres)
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster


def remove_cluster(cluster: Cluster) -> None:
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)
