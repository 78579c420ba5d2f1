"""A throw-away PostgreSQL cluster and the results databases the store tests run on.

The cluster is Debian's ``postgresql`` (``initdb`` and ``pg_ctl`` from /usr/lib/postgresql/*/bin),
in a folder of its own, on a free port on 127.0.0.1 with its unix socket in that folder, started
once per test process and removed at its end. PostgreSQL refuses to run as root, so when the tests
run as root (CI does) the folder belongs to the ``postgres`` user of Debian's package and the
commands run as it (``runuser -u postgres``). Without PostgreSQL the PostgreSQL variants skip, but
FAIL in CI (CI=true), where .ci/run installs it.

``results_db`` is one database per test, on SQLite or PostgreSQL (the same test bodies run on both),
that a test can also take down and bring back: PostgreSQL's cluster stopped at once (``pg_ctl stop
-m immediate``, as a crash), SQLite's folder made read-only.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_ports
from tests.rofs import ROOT_USER, make_read_only, make_writable, writable_mount

SUPERUSER = "bench"


def pg_bin() -> Path | None:
    """The newest PostgreSQL's bin folder with initdb, else the folder of an initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def need_postgresql() -> Path:
    folder = pg_bin()
    if folder is not None and (not ROOT_USER or shutil.which("runuser")):
        return folder
    msg = "PostgreSQL is not installed (apt-get install -y postgresql; .ci/run does it)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@dataclass
class Cluster:
    bin: Path
    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if ROOT_USER:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({out.returncode}): {out.stderr or out.stdout}")

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self) -> str:
        """A fresh database of the cluster: its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    folder = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    try:
        if ROOT_USER:
            shutil.chown(folder, "postgres", "postgres")
        cluster = Cluster(need_postgresql(), folder, free_ports(1)[0])
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop("immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class ResultsDb:
    """One test's results database, which the test can take down and bring back."""

    kind: str
    url: str
    cluster: Cluster | None = None
    folder: Path | None = None  # SQLite: the mount its file lives on
    is_down: bool = False

    def down(self) -> None:
        self.is_down = True
        if self.cluster is not None:
            self.cluster.stop("immediate")  # as a crash: no shutdown checkpoint, clients cut off
        else:
            assert self.folder is not None
            make_read_only(self.folder)

    def up(self) -> None:
        self.is_down = False
        if self.cluster is not None:
            self.cluster.start()
        else:
            assert self.folder is not None
            make_writable(self.folder)


@pytest.fixture(params=["sqlite", "postgresql"])
def results_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultsDb]:
    if request.param == "postgresql":
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        db = ResultsDb("postgresql", cluster.create_database(), cluster=cluster)
        yield db
        if db.is_down:  # a test that failed while the cluster was down: running again for the next
            db.up()
        return
    with writable_mount(tmp_path / "db") as folder:
        db = ResultsDb("sqlite", f"sqlite:///{folder / 'results.db'}", folder=folder)
        yield db
        if db.is_down:
            db.up()


@pytest.fixture
def results_url(results_db: ResultsDb) -> str:
    return results_db.url
