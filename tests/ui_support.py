"""The browser station under test: ``bench ui`` as a real process, and a real headless Chromium.

``served_station`` starts ``bench ui`` on a free port of 127.0.0.1 with a reports folder, an
accounts file (made with bench/ui/accounts.py's ``save_account``) and a station copy whose library
holds the reference sequence and the tests' own small sequences; the state folder is the tests'
own (tests/conftest.py). The browser is Debian's ``chromium`` driven by Playwright: nothing is
downloaded. With ``BENCH_UI_SCREENSHOTS=1`` the tests write the screenshots of docs/ui.md to
docs/ui/; otherwise nowhere, so that ``make test`` leaves the tree as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.report_support import station_copy

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "ui"
PASSWORDS = {"alice": "alice-operator-pw", "bob": "bob-operator-pw", "erin": "erin-engineer-pw"}
ROLES = {"alice": "operator", "bob": "operator", "erin": "engineer"}

# A confirmation, then a value prompt with a picture: what the operator answers is judged like a
# measurement (1 V .. 5 V passes).
PROMPT_SEQUENCE = """\
id: UI-PROMPT
title: Terminal voltage read by the operator
version: 1.0.0
basis: {standard: browser station test, clause: prompt}
requires: [psu, bms]
steps:
  - name: enclosure closed
    prompt:
      text: Confirm the enclosure is closed
  - name: terminal voltage
    prompt:
      text: Read the voltage at the sense terminals
      answer: value
      unit: V
      min: 1 V
      max: 5 V
      picture: terminals.svg
cleanup:
  - set: {psu.output: OFF}
"""
PICTURE = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="240" height="80">'
    '<rect x="4" y="4" width="232" height="72" fill="#ddf4ff" stroke="#0969da"/>'
    '<circle cx="60" cy="40" r="18" fill="#cf222e"/><circle cx="180" cy="40" r="18" fill="#1f2328"/></svg>'
)
# A charge that goes on for 100 simulated hours: minutes on the wall clock, with values changing
# all the time; the tests stop it.
LONG_SEQUENCE = """\
id: UI-LONG
title: Long slow charge
version: 1.0.0
basis: {standard: browser station test, clause: live view}
requires: [psu, bms]
display: [bms.soc, bms.cell_v_max, psu.voltage, psu.current, bms.contactors]
steps:
  - name: close main contactors
    set: {bms.cmd_contactors: CLOSE}
  - name: contactors closed
    wait_until: bms.contactors == CLOSED
    timeout: 5 s
  - name: start a slow charge
    set: {psu.voltage_set: 1000 V, psu.current_set: 2 A, psu.power_set: 60 kW, psu.output: ON}
  - name: charge for a long time
    wait: 100 h
cleanup:
  - name: charger output off
    set: {psu.output: OFF}
  - name: open main contactors
    set: {bms.cmd_contactors: OPEN}
"""


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[str]
    reports: Path
    accounts: Path
    station: Path

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.reports.iterdir() if p.is_dir() and not p.name.startswith("."))

    def record(self, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """result.json and the events of a run, as the terminal path writes them."""
        folder = self.reports / run_id
        result = json.loads((folder / "result.json").read_text())
        events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines() if line.strip()]
        return result, events


def make_accounts(path: Path) -> Path:
    from bench.ui.accounts import save_account

    for name, password in PASSWORDS.items():
        save_account(path, name, ROLES[name], password)  # type: ignore[arg-type]
    return path


def ui_station(tmp: Path, extra_library: Sequence[Path] = ()) -> Path:
    """A copy of sim.yaml whose library is the reference sequence and the tests' sequences (and more)."""
    seqs = tmp / "ui-sequences"
    seqs.mkdir()
    (seqs / "prompt.yaml").write_text(PROMPT_SEQUENCE, encoding="utf-8")
    (seqs / "terminals.svg").write_text(PICTURE, encoding="utf-8")
    (seqs / "long.yaml").write_text(LONG_SEQUENCE, encoding="utf-8")
    paths = [ROOT / "sequences" / "r100" / "overcharge.yaml", seqs, *extra_library]
    library = f"library: [{', '.join(map(str, paths))}]"
    return station_copy(tmp, replace={"library: [../sequences]": library}, name="ui-station.yaml")


def start_served(
    tmp: Path, timeout: float = 60, env: dict[str, str] | None = None, extra_library: Sequence[Path] = ()
) -> Served:
    reports = tmp / "reports"
    accounts = make_accounts(tmp / "accounts.yaml")
    station = ui_station(tmp, extra_library)
    argv = [sys.executable, "-m", "bench.cli", "ui", "--station", str(station), "--listen", "127.0.0.1:0"]
    argv += ["--accounts", str(accounts), "--reports", str(reports)]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    found = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
    if found is None or time.monotonic() > deadline:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"bench ui did not start: {line!r} {err}")
    return Served(found.group(1), proc, reports, accounts, station)


def stop_served(served: Served) -> tuple[int, str, str]:
    """Ctrl-C, as an operator stops it: the exit code and what it wrote."""
    served.proc.send_signal(signal.SIGINT)
    out, err = served.proc.communicate(timeout=60)
    return served.proc.returncode, out, err


@pytest.fixture(scope="module", name="served")
def served_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start_served(tmp_path_factory.mktemp("ui"))
    yield s
    code, _, err = stop_served(s)
    assert code == 0, err
    assert "Traceback" not in err, err


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Any]:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def open_page(browser: Any, served: Served, user: str | None = None, locale: str = "en-GB") -> Any:
    """A page of its own browser context (its own cookies), signed in as ``user`` when given."""
    # bypass_csp: the tests evaluate their own expressions in the page (the page itself runs without eval)
    ctx = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = ctx.new_page()
    page.goto(served.url)
    page.wait_for_selector("body[data-ready='1']")
    if user is not None:
        sign_in(page, user)
    return page


def sign_in(page: Any, user: str) -> None:
    page.click("#sign-in")
    page.fill("#login-name", user)
    page.fill("#login-password", PASSWORDS[user])
    page.click("#login-ok")
    page.wait_for_function(f"window.station.session.user === {json.dumps(user)}")


def choose(page: Any, sequence_id: str, serial: str = "BMS-SN-0000012345") -> None:
    page.click(f"#library button[data-sequence='{sequence_id}']")
    page.fill("#serial", serial)


def start(page: Any) -> str:
    """Press START; the id of the run it started."""
    page.click("#start")
    page.wait_for_function("window.station.run && window.station.busy")
    run_id: str = page.evaluate("window.station.run.run_id")
    return run_id


def wait_verdict(page: Any, timeout_s: float = 90) -> str:
    page.wait_for_selector("#result:not([hidden]) #verdict[data-verdict]", timeout=timeout_s * 1000)
    verdict: str = page.get_attribute("#verdict", "data-verdict")
    return verdict


def wait_step(page: Any, name: str, timeout_s: float = 30) -> None:
    page.wait_for_function(
        "name => (window.station.run?.steps || []).some(s => s.name === name && s.state === 'running')",
        arg=name,
        timeout=timeout_s * 1000,
    )


def post(page: Any, path: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A POST from the page itself (its cookie, its origin), as the page's script makes them."""
    res: dict[str, Any] = page.evaluate(
        """async ([path, data]) => {
            const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify(data)});
            return {status: r.status, body: await r.json()};
        }""",
        [path, data],
    )
    return int(res["status"]), res["body"]


def wait_text(page: Any, selector: str, text: str, timeout_s: float = 10) -> None:
    """Wait until the element's text is ``text`` (the page answers after its POST came back)."""
    page.wait_for_function(
        "([sel, text]) => document.querySelector(sel)?.textContent === text",
        arg=[selector, text],
        timeout=timeout_s * 1000,
    )


def screenshot(page: Any, name: str) -> None:
    """docs/ui/<name>.png, only when BENCH_UI_SCREENSHOTS=1 (the docs' pictures are taken on purpose)."""
    if os.environ.get("BENCH_UI_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)
