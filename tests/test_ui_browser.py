"""The browser station in a real headless Chromium, against ``bench ui`` as a real process.

One station process and one browser serve the whole module; each test uses browser contexts of
its own (separate cookies: separate people). Runs go through the one run path, so each test reads
the run's record (result.json, events.jsonl) and holds the page to it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bench.interlock import Interlock
from bench.ui import i18n
from bench.ui.audit import audit_path
from tests.ui_support import (  # noqa: F401  (fixtures)
    Served,
    browser_fixture,
    choose,
    open_page,
    post,
    screenshot,
    served_fixture,
    start,
    wait_step,
    wait_text,
    wait_verdict,
)


def audit_lines(action: str) -> list[dict[str, Any]]:
    path = audit_path("sim")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [line for line in lines if line["action"] == action]


def test_reference_sequence_started_from_the_page_passes_with_its_measurements(browser: Any, served: Served) -> None:
    page = open_page(browser, served, "alice")
    choose(page, "R100-9G-OVERCHARGE")
    # An operator runs with the library's defaults: the parameter fields are read-only.
    assert page.get_attribute("#param-charge_current", "readonly") is not None
    screenshot(page, "before-run")
    run_id = start(page)
    page.wait_for_selector("#run:not([hidden])")
    wait_step(page, "charging")
    page.wait_for_function("document.querySelector('#values tr[data-signal=\"bms.soc\"] .value').textContent !== '-'")
    screenshot(page, "during-run")
    assert wait_verdict(page) == "PASS"
    result, _ = served.record(run_id)
    assert result["verdict"] == "PASS"
    shown = page.eval_on_selector_all("#measurements tbody tr", "rows => rows.map(r => r.dataset.measurement)")
    assert shown == [m["name"] for m in result["measurements"]] and len(shown) == 7
    peak = page.text_content("#measurements tr[data-measurement='peak_cell_voltage'] td:nth-child(2)")
    recorded = next(m for m in result["measurements"] if m["name"] == "peak_cell_voltage")
    assert peak is not None and abs(float(peak.split()[0]) - recorded["value"]) < 1e-4
    assert page.text_content("#verdict-reason") == result["reason"]
    assert result["operator"] == "alice"
    # The serial typed (or scanned) before START identifies the item in the record and the report.
    assert [(e["answer"], e["record"]) for e in result["operator_entries"]] == [("BMS-SN-0000012345", "identification")]
    assert "alice at the browser station" in result["operator_entries"][0]["source"]
    # Every step shown as the record ended it.
    states = page.eval_on_selector_all("#steps li", "li => li.map(l => l.dataset.state)")
    assert states == [s["outcome"] for s in result["steps"]]
    # The record, served read-only beside the verdict.
    report = page.request.get(served.url + f"runs/{run_id}/report.html")
    assert report.ok and "R100-9G-OVERCHARGE" in report.text() and "BMS-SN-0000012345" in report.text()
    assert page.request.get(served.url + f"runs/{run_id}/../../accounts.yaml").status == 404
    started = [a for a in audit_lines("start") if a.get("run_id") == run_id]
    assert started and started[0]["user"] == "alice" and started[0]["t"]
    screenshot(page, "verdict")
    page.context.close()


def test_a_prompt_is_answered_in_a_dialog_and_a_wrong_unit_is_refused_next_to_the_field(
    browser: Any, served: Served
) -> None:
    page = open_page(browser, served, "alice")
    choose(page, "UI-PROMPT")
    run_id = start(page)
    page.wait_for_selector("#prompt-dialog[open]")
    assert page.text_content("#prompt-text") == "Confirm the enclosure is closed"
    assert page.is_hidden("#prompt-answer") and page.is_visible("#prompt-no")
    page.click("#prompt-yes")
    wait_text(page, "#prompt-text", "Read the voltage at the sense terminals")
    page.wait_for_function("document.getElementById('prompt-picture').naturalWidth === 240")
    # The sequence's picture, opened as a document of its own, runs no script at the station's origin.
    picture = page.request.get(page.evaluate("document.getElementById('prompt-picture').src"))
    assert picture.ok and "sandbox" in picture.headers["content-security-policy"]
    # Modal for the one who answers, with the emergency stop in it; a watcher's page stays usable.
    assert page.evaluate("document.getElementById('prompt-dialog').matches(':modal')")
    assert page.is_visible("#prompt-estop")
    bob = open_page(browser, served, "bob")
    bob.wait_for_selector("#prompt-dialog[open]")
    assert not bob.evaluate("document.getElementById('prompt-dialog').matches(':modal')")
    assert bob.is_disabled("#prompt-ok") and bob.is_visible("#prompt-watch")
    bob.context.close()
    error = "#prompt-form [data-error='answer']"
    page.click("#prompt-ok")  # nothing typed: refused by the page
    wait_text(page, error, "An answer is required.")
    page.fill("#prompt-answer", "3.3 A")  # a current for a voltage: the engine's unit check refuses it
    page.click("#prompt-ok")
    page.wait_for_function(f"document.querySelector(\"{error}\").textContent.startsWith('Not taken:')")
    assert "V" in (page.text_content(error) or "")
    assert page.is_visible("#prompt-dialog[open]")
    screenshot(page, "prompt")
    page.fill("#prompt-answer", "3300 mV")
    page.click("#prompt-ok")
    assert wait_verdict(page) == "PASS"
    result, events = served.record(run_id)
    (m,) = result["measurements"]
    assert m["name"] == "terminal voltage" and abs(m["value"] - 3.3) < 1e-9 and m["unit"] == "V"
    confirmed, answered = [e for e in events if e["kind"] == "prompt_answered"]
    assert (confirmed["step"], confirmed["answer"]) == ("enclosure closed", "yes")
    assert answered["answer"] == "3300 mV" and "alice" in answered["source"]
    answers = [a["answer"] for a in audit_lines("answer_prompt") if a["run_id"] == run_id]
    assert answers == ["yes", "3.3 A", "3300 mV"]
    page.context.close()


def test_a_second_browser_sees_the_same_live_values_and_cannot_start(browser: Any, served: Served) -> None:
    alice = open_page(browser, served, "alice")
    bob = open_page(browser, served, "bob")
    watcher = open_page(browser, served)  # no account: watches only
    choose(alice, "UI-LONG")
    run_id = start(alice)
    wait_step(alice, "charge for a long time")
    # The same numbered update shows the same values in every browser.
    for _ in range(3):
        alice.wait_for_function("window.station.liveLog.size > 3")
        seq = alice.evaluate("Math.max(...window.station.liveLog.keys())")
        for other in (bob, watcher):
            other.wait_for_function("seq => window.station.liveLog.has(seq)", arg=seq)
            assert other.evaluate("seq => window.station.liveLog.get(seq)", seq) == alice.evaluate(
                "seq => window.station.liveLog.get(seq)", seq
            )
        alice.wait_for_function("seq => window.station.seq > seq + 2", arg=seq)
    assert bob.text_content("#run-owner") == "alice"
    # Bob's START is disabled while the run goes on; pressed anyway (a POST), it is refused.
    assert bob.is_hidden("#setup")
    status, body = post(bob, "/api/start", {"sequence": "UI-LONG", "serial": "BMS-SN-0000012345"})
    assert status == 409 and body["error"] == "refused.busy" and body["args"]["owner"] == "alice"
    # Neither may Bob stop Alice's run (he may press the emergency stop, as anyone signed in).
    status, body = post(bob, "/api/stop", {"level": "abort"})
    assert status == 403 and body["error"] == "refused.not_owner"
    status, body = post(watcher, "/api/stop", {"level": "estop"})
    assert status == 403 and body["error"] == "refused.sign_in"
    refused = [a for a in audit_lines("refused") if a["user"] == "bob" and a["what"] == "start"]
    assert refused and refused[-1]["why"] == "busy"
    # Alice aborts it, after confirming: the steps are cancelled, the cleanup runs.
    alice.click("#abort")
    alice.wait_for_selector("#confirm-dialog[open]")
    alice.click("#confirm-yes")
    assert wait_verdict(alice) == "ABORTED"
    assert wait_verdict(bob) == "ABORTED"
    result, events = served.record(run_id)
    assert result["reason"] == "aborted by alice at the browser station"
    assert [e["step"] for e in events if e["kind"] == "step_started" and e["phase"] == "cleanup"] == [
        "charger output off",
        "open main contactors",
    ]
    for page in (alice, bob, watcher):
        page.context.close()


def test_estop_from_the_keyboard_ends_the_run_as_an_emergency_stop_with_the_safe_state_read_back(
    browser: Any, served: Served
) -> None:
    alice = open_page(browser, served, "alice")
    choose(alice, "UI-LONG")
    run_id = start(alice)
    wait_step(alice, "charge for a long time")
    alice.keyboard.press("Escape")  # no confirmation
    assert wait_verdict(alice) == "ABORTED"
    result, events = served.record(run_id)
    (estop,) = [e for e in events if e["kind"] == "emergency_stop"]
    assert estop["reason"] == "emergency stop by alice at the browser station"
    assert result["verdict"] == "ABORTED" and not result["unsafe_end"]
    # The safe state the page shows is the one the record read back, device by device.
    shown = alice.eval_on_selector_all(
        "#safe-state li", "li => li.map(l => [l.dataset.device, l.dataset.safe === 'true'])"
    )
    assert shown == [[s["device"], s["safe"]] for s in result["safe_state"]]
    assert {d for d, _ in shown} == {"bms", "psu"} and all(safe for _, safe in shown)
    assert "emergency stop by alice" in (alice.text_content("#verdict-estop") or "")
    # Emergency stop: no cleanup step ran.
    assert not [e for e in events if e["kind"] == "step_started" and e["phase"] == "cleanup"]
    assert any(a.get("run_id") == run_id and a["user"] == "alice" for a in audit_lines("estop"))
    alice.context.close()


def test_an_operator_cannot_reset_the_interlock_and_an_engineer_can(browser: Any, served: Served) -> None:
    Interlock("sim").trip("supply current above the supply's rating (test)", "test-run")
    try:
        alice = open_page(browser, served, "alice")
        alice.wait_for_function("document.getElementById('interlock-state').textContent === 'TRIPPED'")
        assert alice.is_hidden("#reset-form")
        status, body = post(alice, "/api/interlock/reset", {"reason": "checked the wiring"})
        assert status == 403 and body["error"] == "refused.role"
        assert Interlock("sim").state() is not None
        erin = open_page(browser, served, "erin")
        erin.wait_for_selector("#reset-form:not([hidden])")
        erin.click("#reset-interlock")  # no reason: refused next to the field
        wait_text(erin, "#reset-form [data-error='reason']", "A reason is required.")
        screenshot(erin, "interlock")
        erin.fill("#reset-reason", "supply cable replaced and checked")
        erin.click("#reset-interlock")
        erin.wait_for_function("document.getElementById('interlock-state').textContent === 'armed'")
        assert Interlock("sim").state() is None
        log = [json.loads(line) for line in Interlock("sim").log.read_text().splitlines() if line.strip()]
        assert log[-1]["kind"] == "reset" and log[-1]["by"] == "erin"
        assert log[-1]["reason"] == "supply cable replaced and checked"
        assert audit_lines("reset_interlock")[-1]["user"] == "erin"
        assert any(a["user"] == "alice" and a["what"] == "reset_interlock" for a in audit_lines("refused"))
        # The last run's verdict is on both pages; only the engineer may amend its report.
        run_id = erin.evaluate("window.station.run.run_id")
        assert alice.is_hidden("#amend-form")
        status, body = post(alice, "/api/amend", {"run_id": run_id, "reason": "typo"})
        assert status == 403 and body["error"] == "refused.role"
        erin.fill("#amend-reason", "DUT serial corrected")
        erin.click("#amend")
        erin.wait_for_selector("#amended:not([hidden])", timeout=60_000)
        amended = served.reports / f"{run_id}.A1"
        assert json.loads((amended / "amendment.json").read_text())["by"] == "erin"
        assert erin.get_attribute("#amended", "href") == f"/runs/{run_id}.A1/report.html"
        assert audit_lines("amend_report")[-1]["run_id"] == run_id
        alice.context.close()
        erin.context.close()
    finally:  # a failure above must not leave the tests' station latched for the tests after it
        if Interlock("sim").state() is not None:
            Interlock("sim").reset("test cleanup", "tests")


def test_the_chinese_page_has_every_string_in_its_catalogue(browser: Any, served: Served) -> None:
    assert i18n.missing("zh-Hans") == [] and set(i18n.catalogue("zh-Hans")) == set(i18n.catalogue("en"))
    page = open_page(browser, served, "erin", locale="zh-CN")
    assert page.evaluate("document.documentElement.lang") == "zh-Hans"
    choose(page, "R100-9G-OVERCHARGE")
    assert page.text_content("#start") == "开始"
    # The last test's verdict is on the page too: its words are checked with the rest.
    assert page.is_visible("#result")
    assert page.evaluate("window.station.missing") == []
    # What the sequences write (titles, basis, parameter names and docs) stays as written: left out.
    text = page.evaluate(
        """() => {
            const body = document.body.cloneNode(true);
            for (const el of body.querySelectorAll("#library, #seq-title, #seq-basis, #param-fields")) el.remove();
            return body.textContent;
        }"""
    )
    zh, en = i18n.catalogue("zh-Hans"), i18n.catalogue("en")
    # No English string of the station's own is left on the page (sequence titles, parameter names
    # and docs stay as the sequence writes them).
    left = [v for k, v in en.items() if v != zh[k] and re.search(r"[A-Za-z]{3}", v) and len(v) >= 5 and v in text]
    assert left == []
    page.click("#dismiss")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "zh-Hans")
    # The language is chosen per browser: an English one at the same time stays English.
    other = open_page(browser, served, locale="en-US")
    assert other.text_content("#start") == "START"
    other.select_option("#lang", "zh-Hans")
    other.wait_for_function("document.getElementById('start').textContent === '开始'")
    page.context.close()
    other.context.close()


def test_a_run_the_station_lock_refuses_shows_the_lock_s_line(browser: Any, served: Served) -> None:
    from bench.stationlock import hold_station

    alice = open_page(browser, served, "alice")
    # Another process (a terminal's bench run) holds the station.
    with hold_station("sim", "other-run", "run of OTHER-SEQUENCE"):
        choose(alice, "UI-PROMPT")
        alice.click("#start")
        alice.wait_for_selector("#result:not([hidden]) #verdict[data-refused]")
        reason = alice.text_content("#verdict-reason") or ""
    assert alice.text_content("#verdict") == "NOT STARTED"
    assert reason.startswith("station 'sim' is busy: ") and "run of OTHER-SEQUENCE" in reason
    assert reason.endswith("; nothing was run")
    alice.context.close()
