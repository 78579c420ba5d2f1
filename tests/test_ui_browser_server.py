"""``bench ui`` as a process, seen from plain HTTP: its bad inputs, its stream and its Ctrl-C.

The page's behaviour is tested in Chromium (tests/test_ui_browser.py); here, what an operator's
terminal and a second station process see: one line and exit 2 for a bad station, accounts file
or a port in use, read-only run folders, and a Ctrl-C while a run goes on, which aborts the run
through its stop levels (cleanup, safe state read back, record sealed) before the process ends.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, bench
from tests.ui_support import Served, start_served, stop_served, ui_station


class Client:
    """A browser's HTTP side: one cookie jar, JSON in and out."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookie = ""

    def call(self, path: str, data: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(self.url + path.lstrip("/"), method="POST" if data is not None else "GET")
        if data is not None:
            req.data = json.dumps(data).encode()
            req.add_header("Content-Type", "application/json")
        if self.cookie:
            req.add_header("Cookie", self.cookie)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                if r.headers.get("Set-Cookie"):
                    self.cookie = r.headers["Set-Cookie"].split(";", 1)[0]
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


def events_until(url: str, done: Any, timeout: float = 60) -> list[tuple[str, dict[str, Any]]]:
    """Read the event stream until ``done(kind, data)`` is true; the events read."""
    host, port = url.removeprefix("http://").strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request("GET", "/api/events")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    got: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = resp.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                got.append((kind, data))
                if done(kind, data):
                    return got
        raise AssertionError(f"not seen within {timeout} s: {got[-3:]}")
    finally:
        conn.close()


def test_bad_station_accounts_or_port_are_one_line_and_exit_2(tmp_path: Path) -> None:
    r = bench("ui", "--station", tmp_path / "missing.yaml", "--listen", "127.0.0.1:0")
    assert r.rc == 2 and r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1
    station = ui_station(tmp_path)
    bad = tmp_path / "accounts.yaml"
    bad.write_text("users: {alice: {role: pilot, password: x}}\n")
    r = bench("ui", "--station", station, "--accounts", bad, "--listen", "127.0.0.1:0")
    assert r.rc == 2 and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
    r = bench("ui", "--station", station, "--listen", "localhost")
    assert r.rc == 2 and r.err.strip() == (
        "error: --listen 'localhost': expected HOST:PORT, e.g. 127.0.0.1:8080 (port 0: any free port)"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = bench("ui", "--station", station, "--listen", f"127.0.0.1:{port}")
    assert r.rc == 2 and r.err.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_accounts_are_managed_with_bench_ui_user(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.yaml"
    argv = [sys.executable, "-m", "bench.cli", "ui", "user", "add", str(accounts), "carol", "--role", "engineer"]
    r = subprocess.run([*argv, "--password-stdin"], cwd=ROOT, input="carol-pw-1\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    listed = bench("ui", "user", "list", accounts)
    assert listed.rc == 0 and "carol" in listed.out and "engineer" in listed.out
    assert "carol-pw-1" not in accounts.read_text()


def test_ctrl_c_aborts_the_run_going_on_and_the_record_is_sealed(tmp_path: Path) -> None:
    served: Served = start_served(tmp_path)
    try:
        alice = Client(served.url)
        assert alice.call("/api/login", {"name": "alice", "password": "wrong"})[0] == 400
        status, _ = alice.call("/api/login", {"name": "alice", "password": "alice-operator-pw"})
        assert status == 200 and alice.cookie.startswith("bench_session=")
        status, body = alice.call("/api/start", {"sequence": "UI-LONG", "serial": "not a serial"})
        assert status == 400 and set(body["fields"]) == {"serial"}
        erin = Client(served.url)
        assert erin.call("/api/login", {"name": "erin", "password": "erin-engineer-pw"})[0] == 200
        status, body = erin.call(
            "/api/start", {"sequence": "R100-9G-OVERCHARGE", "params": {"charge_current": "lots"}, "serial": "x"}
        )
        assert status == 400 and set(body["fields"]) == {"charge_current", "serial"}
        status, body = alice.call("/api/start", {"sequence": "UI-LONG", "params": {"x": "1"}, "serial": ""})
        assert status == 403 and body["error"] == "refused.parameters_role"
        status, body = alice.call("/api/start", {"sequence": "UI-LONG", "serial": "BMS-SN-0000012345"})
        assert status == 200, body
        run_id = body["run_id"]

        def charging(kind: str, data: dict[str, Any]) -> bool:
            # The whole run at the start, then each step as it changes.
            steps = [data["step"]] if kind == "step" else ((data.get("run") or {}).get("steps")) or []
            return any(s["name"] == "charge for a long time" and s["state"] == "running" for s in steps)

        seen = events_until(served.url, charging)
        assert seen[0][0] == "snapshot"
        seqs = [d["seq"] for _, d in seen]
        assert seqs == sorted(seqs)
        assert Client(served.url).call(f"/runs/{run_id}/../accounts.yaml")[0] == 404
    finally:
        code, out, err = stop_served(served)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "browser station stopped"
    assert "Traceback" not in err
    result, events = served.record(run_id)
    assert result["verdict"] == "ABORTED" and result["reason"] == "aborted: the browser station was stopped"
    assert [s["safe"] for s in result["safe_state"]] == [True, True]
    cleanup = [e["step"] for e in events if e["kind"] == "step_started" and e["phase"] == "cleanup"]
    assert cleanup == ["charger output off", "open main contactors"]
    assert (served.reports / run_id / "manifest.json").is_file()


def test_the_language_follows_the_browser() -> None:
    from bench.ui.i18n import negotiate

    assert negotiate("zh-CN,zh;q=0.9,en;q=0.8") == "zh-Hans"
    assert negotiate("zh-TW") == "zh-Hans"  # the Chinese catalogue reads better than English there
    assert negotiate("de-DE,de;q=0.9,en-GB;q=0.5,zh;q=0.4") == "en"
    assert negotiate("fr-FR,zh-Hans;q=0.7,en;q=0.3") == "zh-Hans"
    assert negotiate("zh;q=0,en") == "en"
    assert negotiate("") == negotiate(None) == negotiate("fr") == "en"
    assert negotiate("en;q=garbage,zh") == "zh-Hans"


def test_every_string_the_page_names_is_in_both_catalogues() -> None:
    from bench.ui import i18n
    from bench.ui.accounts import ACTIONS

    static = ROOT / "bench" / "ui" / "static"
    script = (static / "app.js").read_text(encoding="utf-8")
    page = (static / "index.html").read_text(encoding="utf-8")
    named = set(re.findall(r'\bt\("([^"]+)"', script)) | set(re.findall(r'data-i18n(?:-title)?="([^"]+)"', page))
    named = {k for k in named if not k.endswith(".")}  # a prefix the page completes (below)
    named |= set(re.findall(r'"(library\.empty)"', script))
    # Keys the page builds from a prefix (an action, a role): each value it can take.
    named |= {f"role.{r}" for r in ("operator", "engineer")}
    named |= {f"action.{a}" for a in ACTIONS}
    # The server's refusals are keys too.
    app = (ROOT / "bench" / "ui" / "app.py").read_text(encoding="utf-8")
    app += (ROOT / "bench" / "ui" / "control.py").read_text(encoding="utf-8")
    named |= set(re.findall(r'"((?:refused|interlock|amend|login)\.[a-z_]+)"', app))
    for lang in i18n.LANGUAGES:
        assert sorted(named - set(i18n.catalogue(lang))) == [], lang
    assert len(named) > 100
