"""A private PostgreSQL 15 cluster for tests and the demo.

The server refuses to run as root, so when we are root the cluster is created and run as the
`postgres` user, in a temp directory that user owns, on a free port, with its socket in that
directory. `stop()` is idempotent and is registered with atexit, so the cluster goes away even when
a test run fails.
"""
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time

PG_BIN = os.environ.get("FLOCK_PG_BIN", "/usr/lib/postgresql/15/bin")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, name="flock-test", settings=None):
        self.settings = dict(settings or {})  # extra server settings (-c name=value), e.g. wal_level
        self.root = tempfile.mkdtemp(prefix=name + "-")
        os.chmod(self.root, 0o755)
        self.datadir = os.path.join(self.root, "data")
        self.sockdir = self.root
        self.port = _free_port()
        self.logfile = os.path.join(self.root, "server.log")
        self.as_postgres = os.geteuid() == 0
        self.user = "postgres" if self.as_postgres else os.environ.get("USER", "postgres")
        self.running = False
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, args, **kw):
        if self.as_postgres:
            args = ["runuser", "-u", "postgres", "--"] + args
        return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

    def start(self):
        self._run([f"{PG_BIN}/initdb", "-D", self.datadir, "-A", "trust", "-U", "postgres",
                   "--no-sync", "-E", "UTF8", "--locale=C"])
        opts = (f"-p {self.port} -k {self.sockdir} -c listen_addresses='' -c fsync=off "
                f"-c shared_preload_libraries=flock,pg_cron -c cron.database_name=postgres -c max_worker_processes=16 -c log_min_messages=warning")
        opts += "".join(f" -c {k}={v}" for k, v in self.settings.items())
        atexit.register(self.stop)
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.datadir, "-l", self.logfile, "-o", opts, "-w", "-t", "60", "start"])
        self.running = True
        return self

    def stop(self):
        if self.running:
            try:
                self._run([f"{PG_BIN}/pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "stop"])
            except subprocess.CalledProcessError:
                pass
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self, dbname="postgres"):
        """libpq environment for clients (psql, the flock CLI)."""
        env = dict(os.environ)
        env.update(PGHOST=self.sockdir, PGPORT=str(self.port), PGUSER="postgres", PGDATABASE=dbname)
        return env

    def dsn(self, dbname="postgres", user="postgres"):
        return f"host={self.sockdir} port={self.port} user={user} dbname={dbname}"

    def server_log(self):
        try:
            with open(self.logfile, errors="replace") as f:  # hostile models put arbitrary bytes in statements
                return f.read()
        except OSError:
            return ""

    def psql(self, sql, dbname="postgres"):
        return subprocess.run([f"{PG_BIN}/psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", sql],
                              env=self.env(dbname), check=True, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
