"""The ISO/IEC 17025 report of a real run: every item of 7.8.2.1 a-p, 7.8.3 and 7.8.6, in HTML and PDF.

One run of the overcharge sequence on a copy of the simulated station that states a customer
and a date of receipt, with one parameter overridden (a deviation), signed with a test key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.record import file_sha256
from tests.conftest import OVERCHARGE, Completed, bench
from tests.report_support import pdf_pages, plain_text, station_copy

LAB_EXTRA = {
    "  authorised_by: not authorised (development run on the simulated station)\n": (
        "  authorised_by: Dr. A. Example, head of the HIL laboratory\n"
        "  customer: {name: Example Truck Components GmbH, contact: qa@example.com}\n"
    ),
    "    condition: model, not a physical item\n": (
        "    condition: model, not a physical item\n    received: 2026-11-20\n"
    ),
    "      initial_soc_pct: 50": "      initial_soc_pct: 69",
}


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    r = bench("keys", "init", "--dir", d)
    assert r.rc == 0, r.err
    return d


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, keydir: Path) -> Completed:
    tmp = tmp_path_factory.mktemp("r17025")
    station = station_copy(tmp, replace=LAB_EXTRA)
    r = bench(
        "run", OVERCHARGE, "--station", station, "--reports", tmp / "reports", "-q",
        "-p", "observation=1 s", "-p", "charge_current=59 A",
        env={"BENCH_KEY_DIR": str(keydir)}, timeout=600,  # an hour of simulated charge, PDF: slow on a loaded host
    )  # fmt: skip
    assert r.rc == 0, r.out + r.err
    return r


@pytest.fixture(scope="module")
def texts(run: Completed) -> tuple[str, list[str], dict[str, object]]:
    d = run.run_dir()
    return plain_text((d / "report.html").read_text()), pdf_pages(d / "report.pdf"), run.result()


def _items(result: dict) -> dict[str, list[str]]:  # type: ignore[type-arg]
    """Clause -> regexes that must all be found in the report text."""
    rid = f"TR-{result['run_id']}"
    seq = result["sequence"]
    return {
        "7.8.2.1 a) title": [r"Test Report"],
        "7.8.2.1 b) laboratory name and address": [r"HIL Bench Laboratory", r"Example Street 1, 00000 Example City"],
        "7.8.2.1 c) location": [r"Location of the tests in-process simulation on the controller host"],
        "7.8.2.1 d) unique id and end": [re.escape(rid), r"End of report " + re.escape(rid)],
        "7.8.2.1 e) customer": [r"Example Truck Components GmbH, qa@example\.com"],
        "7.8.2.1 f) method": [
            re.escape(seq["id"]),
            r"version 1\.0\.0",
            r"clause 6\.7, Annex 9G",
            seq["sha256"],
        ],
        "7.8.2.1 g) item": [r"simulated 192s NMC", r"vin: WDB9634031L000001", r"ecu_serial: BMS-SN-0000012345"],
        "7.8.2.1 h) date of receipt": [r"Date of receipt 2026-11-20"],
        "7.8.2.1 i) dates of performance": [re.escape(result["started_utc"]), re.escape(result["ended_utc"])],
        "7.8.2.1 j) date of issue": [r"Date of issue " + re.escape(result["ended_utc"][:10])],
        "7.8.2.1 k) sampling": [r"Sampling plan and method not applicable: "],
        "7.8.2.1 l) results relate only to the items tested": [r"results relate only to the items tested"],
        # The peak cell voltage on the DAQ (U from its data sheet); the reaction time's two instants
        # each rectangular over the longest update period of their conditions' signals:
        # BMS_Status / the supply's 200 ms poll, and BMS_Limits' 1 s (the termination signal).
        "7.8.2.1 m) results with units": [r"peak_cell_voltage 4\.25\d* 0\.0002 V", r"reaction_time 300 590 ms"],
        "7.8.2.1 n) deviations": [
            r"parameter charge_current overridden: 59 A instead of 60 A",
            r"Standing deviations of the sequence from the method of UN R100",
            r"Performed at HIL level",
        ],
        "7.8.2.1 o) authorised by": [r"Authorised by Dr\. A\. Example"],
        "7.8.2.1 p) external providers": [r"every result in this report was obtained by the laboratory itself"],
        "7.8.2.1 NOTE reproduction": [r"shall not be reproduced except in full without the written approval"],
        "7.8.3.1 a) environment": [r"Ambient temperature 25 degC", r"Relative humidity 45 %"],
        "7.8.3.1 c) uncertainty": [r"expanded uncertainty U \(k = 2\)", r"U = k·u_c, k = 2"],
        "7.8.6 decision rule and conformity": [
            r"Decision rule \(7\.8\.6\.1, 7\.8\.6\.2 c\): simple acceptance \(ILAC-G8:09/2019 4\.2\.1, w = 0\)",
            # 7.8.6.2 b): the cell voltage limit is the item's, not the regulation's.
            r"peak_cell_voltage = 4\.25\d* ± 0\.\d+ V conforms to the item specification \(.*?\): limit ≤ 4\.3 V",
            r"reaction_time = 300(?: ± 590)? ms meets the lab's method limit: limit ≥ 0 ms",
        ],
        "equipment register": [r"SIM-PSU-01", r"SIM-CAL-0001", r"2027-01-15"],
    }


def test_every_17025_item_in_html(texts: tuple[str, list[str], dict]) -> None:  # type: ignore[type-arg]
    html, _, result = texts
    missing = [f"{item}: {rx}" for item, rxs in _items(result).items() for rx in rxs if not re.search(rx, html)]
    assert not missing, "\n".join(missing)


def test_every_17025_item_in_pdf(texts: tuple[str, list[str], dict]) -> None:  # type: ignore[type-arg]
    _, pages, result = texts
    text = " ".join(pages)
    missing = [f"{item}: {rx}" for item, rxs in _items(result).items() for rx in rxs if not re.search(rx, text)]
    assert not missing, "\n".join(missing)


def test_pdf_every_page_has_id_and_page_n_of_n(texts: tuple[str, list[str], dict]) -> None:  # type: ignore[type-arg]
    _, pages, result = texts
    rid = f"TR-{result['run_id']}"
    n = len(pages)
    assert n >= 2
    for i, page in enumerate(pages, 1):
        assert rid in page, f"page {i} lacks the report id"
        assert f"page {i} of {n}" in page, f"page {i}: {page[-200:]}"
    assert f"End of report {rid}" in pages[-1]


def test_plots_of_key_signals(run: Completed) -> None:
    from pypdf import PdfReader

    html = (run.run_dir() / "report.html").read_text()
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", html)
    assert any("whole run" in c for c in captions)
    assert any("@t_threshold" in c and "@t_interrupt" in c for c in captions), captions
    assert len(re.findall(r'src="data:image/png;base64,', html)) == len(captions) >= 2
    images = sum(len(p.images) for p in PdfReader(str(run.run_dir() / "report.pdf")).pages)
    assert images >= 2


def test_record_is_signed_and_lists_new_files(run: Completed, keydir: Path) -> None:
    d = run.run_dir()
    manifest = json.loads((d / "manifest.json").read_text())
    assert {"can.mf4", "report.html", "result.json", "can.blf"} <= set(manifest["files"])
    assert manifest["signer"]["algorithm"] == "Ed25519"
    assert (d / "manifest.sig").is_file()
    # The PDF is typeset after the seal; report-pdf.json vouches for it, signed by the same key.
    assert "report.pdf" not in manifest["files"]
    seal = json.loads((d / "report-pdf.json").read_text())
    assert seal["file"] == "report.pdf" and seal["manifest_sha256"] == file_sha256(d / "manifest.json")
    assert seal["source"] == {"file": "report.html", "sha256": manifest["files"]["report.html"]}
    assert (d / "report-pdf.sig").is_file()
    r = bench("verify", d, env={"BENCH_KEY_DIR": str(keydir)})
    assert r.rc == 0, r.err
    assert "intact and signed (" in r.out and "Ed25519, station key" in r.out


def test_amendment_supersedes_and_keeps_the_original(run: Completed, keydir: Path) -> None:
    d = run.run_dir()
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    env = {"BENCH_KEY_DIR": str(keydir)}
    r = bench(
        "report", "amend", d, "--reason", "customer address corrected", "--by", "B. Reviewer", "--no-pdf", env=env
    )
    assert r.rc == 0, r.err
    rid = f"TR-{run.result()['run_id']}"
    amended = d.parent / f"{d.name}.A1"
    assert f"{rid}-A1" in r.out
    html = plain_text((amended / "report.html").read_text())
    assert f"This report {rid}-A1 supersedes report {rid}" in html
    assert "customer address corrected" in html and "B. Reviewer" in html
    assert f"End of report {rid}-A1" in html
    info = json.loads((amended / "amendment.json").read_text())
    assert info["supersedes"] == rid and info["original_manifest_sha256"]
    # The original is untouched and still verifies; the amendment verifies on its own.
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before
    assert bench("verify", d, env=env).rc == 0
    assert bench("verify", amended, env=env).rc == 0
    # A second amendment supersedes the first.
    r2 = bench("report", "amend", d, "--reason", "typo", "--by", "B. Reviewer", "--no-pdf", env=env)
    assert r2.rc == 0 and f"{rid}-A2" in r2.out
    assert f"supersedes report {rid}-A1" in plain_text((d.parent / f"{d.name}.A2" / "report.html").read_text())


def test_result_schema_is_versioned_and_exported(run: Completed, tmp_path: Path) -> None:
    from bench.result import RESULT_SCHEMA_VERSION, RunResult

    r = bench("schema", "--what", "result", "-o", tmp_path / "result.schema.json")
    assert r.rc == 0, r.err
    schema = json.loads((tmp_path / "result.schema.json").read_text())
    meas = schema["$defs"]["Measurement"]["properties"]
    assert {"uncertainty", "decision", "value", "unit"} <= set(meas)
    data = run.result()
    assert data["schema_version"] == RESULT_SCHEMA_VERSION
    RunResult.model_validate(data)


def test_campaign_report(run: Completed, tmp_path: Path) -> None:
    out = tmp_path / "campaign.html"
    r = bench("report", "campaign", run.run_dir(), "-o", out)
    assert r.rc == 0, r.err
    text = plain_text(out.read_text())
    assert f"TR-{run.result()['run_id']}" in text and "PASS" in text and "End of campaign report" in text
