"""The browser station in a lab: the lab's benches on the page, and a job sent to one of them.

A mosquitto of the test's own (tests/labkit.py) with one ``bench agent``; ``bench ui`` reads the
lab from ``BENCH_BROKER``, as ``bench lab`` does. The job is the lab's short sequence, which the
station's library and the agent's hold in the same file (same id, same SHA-256).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any

from bench.lab import client
from tests.labkit import (  # noqa: F401  (fixtures)
    LAB_DIR,
    Lab,
    lab_fixture,
    mosquitto_fixture,
)
from tests.ui_support import browser_fixture, open_page, start_served, stop_served  # noqa: F401  (a fixture)


def in_thread(coro: Any) -> Any:
    """Run a coroutine to its end in a thread of its own: Playwright's sync API holds this thread's loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_the_lab_s_benches_are_shown_and_a_job_goes_to_the_one_chosen(browser: Any, lab: Lab, tmp_path: Path) -> None:
    lab.start_agent("bench-a")
    in_thread(asyncio.to_thread(lab.wait_online, ["bench-a"]))
    (tmp_path / "ui").mkdir()
    served = start_served(tmp_path / "ui", env={"BENCH_BROKER": lab.broker.url()}, extra_library=[LAB_DIR])
    try:
        page = open_page(browser, served, "alice")
        page.wait_for_selector("#lab:not([hidden]) tr[data-bench='bench-a']")
        assert page.text_content("tr[data-bench='bench-a'] td:nth-child(2)") == "idle"
        page.click("#library button[data-sequence='LAB-SHORT']")
        page.wait_for_selector("#lab-send:not([hidden])")
        page.select_option("#lab-bench", "bench-a")
        page.click("#lab-submit")
        page.wait_for_function("document.getElementById('message').textContent.startsWith('Job ')")
        job = page.text_content("#message").split()[1]  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            snap = in_thread(client.snapshot(lab.broker.broker()))
            if job in snap.results:
                break
            time.sleep(0.5)
        assert snap.results[job].verdict == "PASS" and snap.results[job].bench == "bench-a"
        assert snap.jobs[job].submitter == "alice" and snap.jobs[job].require == {"bench": "bench-a"}
        page.context.close()
    finally:
        code, _, err = stop_served(served)
    assert code == 0 and "Traceback" not in err, err
