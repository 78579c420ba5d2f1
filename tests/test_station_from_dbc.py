"""Start from a supplier's DBC (issue 12, item 10): `bench dbc show` and `bench station new --dbc`.

Every loadable corpus file is shown and gets a station skeleton that validates as written, as a
listener and as each of its nodes; a refused file is one line with exit code 2 from both
commands, the loader's own words.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import bench
from tests.test_bad_inputs import CONTROL
from tests.test_dbc_corpus import CORPUS, LOADS, REFUSED


def _nodes(dbc: Path) -> list[str]:
    import cantools

    db = cantools.database.load_file(str(dbc))
    assert isinstance(db, cantools.database.can.Database)
    return [n.name for n in db.nodes]


@pytest.mark.parametrize("dbc", sorted(LOADS))
def test_a_corpus_file_gets_a_station_that_validates(tmp_path: Path, dbc: str) -> None:
    shutil.copy(CORPUS / dbc, tmp_path / dbc)
    for node in [None, *_nodes(CORPUS / dbc)]:
        out = tmp_path / f"station-{node or 'listener'}.yaml"
        r = bench("station", "new", "--dbc", dbc, *(["--node", node] if node else []), "-o", out.name, cwd=tmp_path)
        assert r.rc == 0, r.err
        assert r.out.startswith(f"wrote {out.name}: device 'dut' on {dbc}")
        text = out.read_text()
        for key in ("node:", "send:", "cycle_times:", "units:", "connect_timeout:", "safe_state:"):
            assert f"# {key}" in text, key  # each explained in a comment
        data = YAML(typ="safe").load(text)
        config = data["devices"]["dut"]["config"]
        assert config["dbc"] == dbc and config.get("node") == node
        assert config["can"]["interface"] == "socketcand" and data["serve"]["simulators"] == []
        # A placeholder that commands nothing and reads back a cyclic signal another node sends; a
        # file with none such (a node that sends every cyclic message) says so in a comment.
        if "safe_state" in data["devices"]["dut"]:
            assert data["devices"]["dut"]["safe_state"]["set"] == {}
        else:
            assert "# (no cyclic signal another node sends to read back: write it yourself)" in text
        v = bench("validate", out.name, cwd=tmp_path)
        assert v.rc == 0, v.err
        assert v.out.startswith(f"{out.name}: ok (station)")


def test_a_physical_interface_and_the_station_from_another_folder(tmp_path: Path) -> None:
    (tmp_path / "stations").mkdir()
    r = bench(
        "station", "new", "--dbc", CORPUS / "odd_units.dbc", "--node", "BENCH", "--can", "pcan:PCAN_USBBUS1",
        "-o", tmp_path / "stations" / "bench3.yaml",
    )  # fmt: skip
    assert r.rc == 0, r.err
    data = YAML(typ="safe").load((tmp_path / "stations" / "bench3.yaml").read_text())
    assert data["devices"]["dut"]["config"]["can"] == {
        "interface": "pcan",
        "channel": "PCAN_USBBUS1",
        "bitrate": 500000,
    }
    assert "serve" not in data and data["id"] == "bench3"
    # The DBC is named relative to the station file, as the loader reads it.
    assert (tmp_path / "stations" / data["devices"]["dut"]["config"]["dbc"]).resolve() == CORPUS / "odd_units.dbc"
    assert '# units: {Calls: "1", Count: "1"}' in (tmp_path / "stations" / "bench3.yaml").read_text()
    assert bench("validate", tmp_path / "stations" / "bench3.yaml").rc == 0


def test_an_existing_file_is_kept_without_force(tmp_path: Path) -> None:
    out = tmp_path / "station.yaml"
    out.write_text("mine\n")
    args = ("station", "new", "--dbc", CORPUS / "big_endian.dbc", "-o", out)
    r = bench(*args)
    assert r.rc == 2 and r.err == f"error: {out} exists; --force overwrites it\n", r.err
    assert out.read_text() == "mine\n"
    assert bench(*args, "--force").rc == 0
    assert out.read_text().startswith("# A station for the CAN device")
    r = bench("station", "new", "--dbc", CORPUS / "big_endian.dbc", "-o", tmp_path, "--force")
    assert r.rc == 2 and r.err == f"error: {tmp_path} is a folder\n", r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["station.yaml"]  # no temporary file left


@pytest.mark.parametrize("dbc", sorted(REFUSED))
def test_a_refused_dbc_is_one_line_from_both_commands(tmp_path: Path, dbc: str) -> None:
    out = tmp_path / "station.yaml"
    for args in (("dbc", "show", CORPUS / dbc), ("station", "new", "--dbc", CORPUS / dbc, "-o", out)):
        r = bench(*args)
        assert r.rc == 2, r.out + r.err
        assert r.out == ""
        assert r.err.count("\n") == 1 and r.err.startswith("error: ") and REFUSED[dbc] in r.err, r.err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--node", "NOPE"), "error: --node: node 'NOPE' is not in big_endian.dbc (nodes: INV, BENCH)"),
        (("--can", "pcan"), "error: --can pcan: expected 'served' or INTERFACE:CHANNEL"),
        (("--can", "nosuch:x"), "unknown CAN interface 'nosuch'"),
        (("--can", "socketcan:nosuchcan9"), "CAN interface 'nosuchcan9' does not exist on this host"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    shutil.copy(CORPUS / "big_endian.dbc", tmp_path)
    r = bench("station", "new", "--dbc", "big_endian.dbc", *args, "-o", "station.yaml", cwd=tmp_path)
    assert r.rc == 2 and r.err.count("\n") == 1 and message in r.err, r.err
    assert list(tmp_path.iterdir()) == [tmp_path / "big_endian.dbc"]


def test_a_missing_dbc_is_one_line(tmp_path: Path) -> None:
    r = bench("dbc", "show", tmp_path / "nope.dbc")
    assert r.rc == 2 and r.err == f"error: DBC file not found: {tmp_path / 'nope.dbc'}\n"


def test_show_lists_names_units_cycles_senders_and_value_tables() -> None:
    r = bench("dbc", "show", CORPUS / "value_tables_spaces.dbc")
    assert r.rc == 0, r.err
    assert "BMS_State  0x380  8 bytes  every 100 ms  sent by BMS" in r.out
    assert '    states: 0 "No Error", 1 "Over Voltage", 2 "Under Voltage"' in r.out
    r = bench("dbc", "show", CORPUS / "duplicate_names.dbc")
    lines = [line.split() for line in r.out.splitlines()]
    assert ["Pack_Summary.PackSoc", "PackSoc", "%", "0", "..", "127.5"] in lines
    # A name in two messages has no short name; a multiplexed signal says when it is sent.
    assert [
        "String_Summary.MaxCellVoltage",
        "(not",
        "unique)",
        "V",
        "0",
        "..",
        "65.535",
        "when",
        "StringId",
        "=",
        "0",
    ] in (lines)
    r = bench("dbc", "show", CORPUS / "odd_units.dbc")
    assert "Volt = V" in r.out and "Count (opaque)" in r.out and "every 1 s" in r.out
    assert "opaque units (not in the unit table): Calls, Count;" in r.out
    r = bench("dbc", "show", CORPUS / "vector_xxx_only.dbc")
    assert "nodes: none named" in r.out and "no sender named" in r.out


def test_control_characters_in_a_dbc_are_shown_not_sent_to_the_terminal(tmp_path: Path) -> None:
    dbc = tmp_path / "ctrl.dbc"
    dbc.write_bytes(
        b'VERSION ""\n\nNS_ :\n\nBS_:\n\nBU_: BMS\n\nBO_ 256 Status: 8 BMS\n'
        b' SG_ Mode : 0|8@1+ (1,0) [0|255] "\x1b[31mX" Vector__XXX\n\nVAL_ 256 Mode 0 "Off\x1b[2J" 1 "On" ;\n'
    )
    r = bench("dbc", "show", dbc)
    assert r.rc == 0, r.err
    assert not CONTROL.search(r.out), r.out
    assert "\\x1b[31mX (opaque)" in r.out and '0 "Off\\x1b[2J"' in r.out
    r = bench("station", "new", "--dbc", dbc, "-o", tmp_path / "s.yaml")
    assert r.rc == 0, r.err
    assert not CONTROL.search((tmp_path / "s.yaml").read_text())
