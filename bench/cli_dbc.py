"""``bench dbc show`` and ``bench station new --dbc``: start from a supplier's DBC (docs/own-device.md).

Both load the DBC through the CAN driver itself (``drivers/can_dbc.py``), so a file the driver
refuses is refused here with the same one line, and the names, units and roles shown are the
ones a station and a sequence will see.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bench.errors import ExpressionError, LoadError
from bench.units import format_value, signal_unit

# The console (and the run engine behind it), the expression parser and the CAN driver are
# imported inside the commands: `bench --help` loads this module for its help text only.

if TYPE_CHECKING:
    from cantools.database.can import Message, Signal

    from drivers.can_dbc import CanDbcDriver

dbc_app = typer.Typer(no_args_is_help=True, help="CAN databases (DBC files).")
station_app = typer.Typer(no_args_is_help=True, help="Station files.")

# The name `bench station new` gives the device (a sequence writes dut.<signal>).
DEVICE = "dut"
# The served bus of a new station: `bench sim serve` opens this channel, a socketcand client sends on it.
SERVED_PORT = 29536
SERVED_CHANNEL = "dut0"


def _driver(dbc: Path, node: str | None = None) -> CanDbcDriver:
    """The CAN driver on ``dbc``: its loader's checks, one line and exit 2 for what it refuses."""
    from bench.console import shown
    from bench.device import ConfigError
    from drivers.can_dbc import CanDbcDriver

    # fd: an FD DBC loads here too; the skeleton gives the device fd only for a DBC with FD messages.
    config: dict[str, Any] = {"dbc": str(dbc), "can": {"interface": "virtual"}, "fd": True}
    if node is not None:
        config["node"] = node
    try:
        return CanDbcDriver(DEVICE, config, Path.cwd())
    except ConfigError as exc:
        where = "" if exc.key == "dbc" else f"--{exc.key}: "
        raise LoadError(shown(f"{where}{exc}")) from None


def _frame_id(m: Message) -> str:
    return f"0x{m.frame_id:08X}" if m.is_extended_frame else f"0x{m.frame_id:03X}"


def _cycle(m: Message) -> str:
    if not m.cycle_time:
        return "no cycle time"
    return f"every {m.cycle_time:g} ms" if m.cycle_time < 1000 else f"every {m.cycle_time / 1000:g} s"


def _senders(m: Message) -> str:
    named = [s for s in m.senders if s != "Vector__XXX"]
    return f"sent by {', '.join(named)}" if named else "no sender named"


def _unit(s: Signal) -> str:
    spelling = (s.unit or "").strip()
    unit = signal_unit(spelling)
    if unit.opaque:
        return f"{spelling} (opaque)"
    if unit.text != spelling:
        return f"{spelling} = {unit.text}"
    return spelling or "-"


def _range(s: Signal) -> tuple[float, float]:
    """The physical range of a signal: the DBC's, or its raw range where the DBC gives none (often [0|0])."""
    if s.minimum is not None and s.maximum is not None and s.minimum < s.maximum:
        return float(s.minimum), float(s.maximum)
    raw = (-(1 << (s.length - 1)), (1 << (s.length - 1)) - 1) if s.is_signed else (0, (1 << s.length) - 1)
    ends = sorted(r * s.scale + s.offset for r in raw)
    return float(ends[0]), float(ends[1])


def _mux(s: Signal) -> str:
    if s.is_multiplexer:
        return "multiplexer"
    if s.multiplexer_signal is not None and s.multiplexer_ids:
        return f"when {s.multiplexer_signal} = {', '.join(str(i) for i in s.multiplexer_ids)}"
    return ""


def _states(s: Signal) -> str:
    from bench.expr import quote_state

    return ", ".join(f"{int(code)} {quote_state(str(name))}" for code, name in (s.choices or {}).items())


@dbc_app.command("show")
def show(dbc: Annotated[Path, typer.Argument(help="DBC file")]) -> None:
    """List messages and signals: qualified names, units, cycle times, senders and value tables."""
    from bench.console import shown

    drv = _driver(dbc)
    db = drv.db
    short = {alias: info.name for info in drv.signals() for alias in (info.name, *info.aliases)}
    nodes = [n.name for n in db.nodes]
    opaque: set[str] = set()
    out = [
        f"{dbc}: {len(db.messages)} message{'s' if len(db.messages) != 1 else ''}, nodes: {', '.join(nodes) if nodes else 'none named'}",
        f"a sequence writes {DEVICE}.<Message>.<signal>, or {DEVICE}.<signal> where the signal name is unique",
    ]
    for m in sorted(db.messages, key=lambda m: m.frame_id):
        kind = [k for k, on in (("29-bit", m.is_extended_frame), ("FD", m.is_fd)) if on]
        out.append("")
        out.append(
            f"{m.name}  {_frame_id(m)}  {m.length} bytes{''.join(', ' + k for k in kind)}  {_cycle(m)}  {_senders(m)}"
        )
        rows = []
        for s in m.signals:
            qualified = f"{m.name}.{s.name}"
            name = short.get(f"{DEVICE}.{qualified}", f"{DEVICE}.{s.name}").removeprefix(f"{DEVICE}.")
            lo, hi = _range(s)
            if signal_unit((s.unit or "").strip()).opaque:
                opaque.add((s.unit or "").strip())
            rows.append(
                (
                    qualified,
                    s.name if name == s.name else "(not unique)",
                    _unit(s),
                    f"{format_value(lo)} .. {format_value(hi)}",
                    _mux(s),
                )
            )
            if s.choices:
                rows.append((f"  states: {_states(s)}", "", "", "", ""))
        widths = [max((len(r[i]) for r in rows if r[1]), default=0) for i in range(4)]
        for r in rows:
            if not r[1]:  # a value table, under its signal
                out.append(f"  {r[0]}")
                continue
            out.append(("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[4]).rstrip())
    if opaque:
        out.append("")
        out.append(
            f"opaque units (not in the unit table): {', '.join(sorted(opaque))}; they compare with plain numbers"
            " and themselves, or a station maps them (units:)"
        )
    for line in out:
        typer.echo(shown(line))


@station_app.command("new")
def new(
    dbc: Annotated[Path, typer.Option("--dbc", help="the device's DBC file")],
    output: Annotated[Path, typer.Option("--output", "-o", help="station file to write")],
    node: Annotated[
        str | None, typer.Option(help="the DBC node the bench plays (it sends that node's messages)")
    ] = None,
    can: Annotated[
        str,
        typer.Option(help="'served' (bench sim serve's socketcand bus) or INTERFACE:CHANNEL, e.g. pcan:PCAN_USBBUS1"),
    ] = "served",
    bitrate: Annotated[int, typer.Option(help="bit rate of a physical interface that takes one")] = 500000,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented station skeleton for a CAN device described by a DBC; it validates as written."""
    from bench.plan import check_station
    from bench.station import load_station

    if output.is_dir():
        raise LoadError(f"{output} is a folder")
    if output.exists() and not force:
        raise LoadError(f"{output} exists; --force overwrites it")
    drv = _driver(dbc, node)
    if not output.parent.is_dir():
        raise LoadError(f"{output.parent} is not a folder")
    rel = os.path.relpath(dbc.resolve(), output.resolve().parent)
    text = _skeleton(drv, rel, output.stem, node, can, bitrate)
    # Checked as `bench validate` checks it before it replaces anything: a skeleton that does not
    # validate (a SocketCAN channel this host lacks) is not written.
    tmp = output.with_name(f".{output.name}.new")
    try:
        tmp.write_text(text, encoding="utf-8")
        try:
            check_station(load_station(tmp))
        except LoadError as exc:
            raise LoadError(str(exc.message)) from None
        tmp.replace(output)
    except OSError as exc:
        raise LoadError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    typer.echo(f"wrote {output}: device '{DEVICE}' on {dbc}; check it with `bench validate {output}`")


def _can_lines(can: str, bitrate: int) -> tuple[list[str], bool]:
    """The ``can:`` lines of the skeleton and whether it is the served bus."""
    alternatives = [
        "#   can: {interface: pcan, channel: PCAN_USBBUS1, bitrate: 500000}   # PEAK PCAN-USB",
        "#   can: {interface: socketcan, channel: can0}   # Linux, after `ip link set can0 up type can bitrate 500000`",
        f"#   can: {{interface: socketcand, host: 127.0.0.1, port: {SERVED_PORT}, channel: {SERVED_CHANNEL}}}"
        "   # bench sim serve",
    ]
    if can == "served":
        return [
            "# The bus: as written, the socketcand server `bench sim serve --station` this file opens",
            "# (serve: below), where any socketcand client can send the device's frames. On a bench:",
            *alternatives[:2],
            f"can: {{interface: socketcand, host: 127.0.0.1, port: {SERVED_PORT}, channel: {SERVED_CHANNEL}}}",
        ], True
    interface, sep, channel = can.partition(":")
    if not sep or not interface or not channel:
        raise LoadError(f"--can {can}: expected 'served' or INTERFACE:CHANNEL, e.g. pcan:PCAN_USBBUS1")
    rate = "" if interface in ("socketcan", "socketcand", "virtual") else f", bitrate: {bitrate}"
    return [
        "# The bus (any python-can interface). Other ways to reach it:",
        *alternatives,
        f"can: {{interface: {interface}, channel: {channel}{rate}}}",
    ], False


def _skeleton(drv: CanDbcDriver, dbc: str, stem: str, node: str | None, can: str, bitrate: int) -> str:
    from bench.console import shown

    db = drv.db
    nodes = [n.name for n in db.nodes]
    sent = [m.name for m in drv.tx_msgs]
    received = [m for m in drv.rx_msgs.values() if node is None or node not in m.senders]
    no_cycle = [m.name for m in received if not m.cycle_time]
    opaque = sorted(
        {(s.unit or "").strip() for m in db.messages for s in m.signals if signal_unit(s.unit or "").opaque}
    )
    can_lines, served = _can_lines(can, bitrate)
    station_id = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem.lower()).strip("-_") or "station"
    cfg: list[str] = [
        f"dbc: {_yaml_str(dbc)}   # relative to this file",
        *can_lines,
        *(
            ["fd: true   # the DBC has CAN FD messages (data_bitrate: for interfaces that take one)"]
            if any(m.is_fd for m in db.messages)
            else []
        ),
        "# node: the DBC node the bench plays; the bench then sends that node's messages at their",
        f"# cycle time. Without node the device only listens. Nodes in the file: {', '.join(nodes) or 'none'}.",
    ]
    if node is not None:
        cfg.append(f"node: {node}   # sends: {', '.join(sent) or 'nothing'}")
    else:
        cfg.append(f"# node: {nodes[0] if nodes else 'NAME'}")
    cfg += [
        "# send: only these messages (a DBC whose senders are all Vector__XXX needs send, not node):",
        f"# send: [{', '.join(sent) if sent else (db.messages[0].name)}]",
        "# cycle_times: for a message the DBC gives no cycle time, so that its absence at connect is",
        "# noticed (the device's actual cycle, 1 ms to 1 h):",
        f"# cycle_times: {{{', '.join(f'{n}: 500 ms' for n in no_cycle)}}}"
        if no_cycle
        else "# cycle_times: {MESSAGE: 500 ms}   (every message received here has one in the DBC)",
        "# units: the DBC's unit spellings the unit table does not know (opaque units: they compare",
        "# only with plain numbers and themselves) mapped to units it knows:",
        "# units: {" + ", ".join(f'{_yaml_str(u)}: "1"' for u in opaque) + "}"
        if opaque
        else '# units: {Count: "1"}   (every unit of this DBC is in the table)',
        "# connect_timeout: how long connect waits for the messages a run refers to (default 2.5 x",
        "# the slowest of their cycles, at least 1 s); a missing one is named with its id and cycle:",
        "# connect_timeout: 5 s",
    ]
    lines = [
        f"# A station for the CAN device described by {shown(dbc)}, written by `bench station new`.",
        "# It validates as written (`bench validate`); the comments say what to change. Names in a",
        f"# sequence: {DEVICE}.<Message>.<signal>, or {DEVICE}.<signal> where unique (`bench dbc show`).",
        f"id: {station_id}",
        f"title: {_yaml_str(f'{Path(dbc).name} on CAN')}",
        "",
        "devices:",
        f"  {DEVICE}:",
        "    driver: can_dbc",
        f"    doc: {_yaml_str(f'the device described by {Path(dbc).name}')}",
        "    config:",
        *(f"      {line}" for line in cfg),
        *(f"    {line}" for line in _safe_state(drv, node)),
    ]
    if served:
        lines += [
            "",
            "# Read by `bench sim serve --station` only: a socketcand server with the channel above and no",
            "# simulated plant behind it; the device's frames come from any socketcand client.",
            "serve:",
            "  simulators: []",
            f"  can: {{port: {SERVED_PORT}, channels: [{SERVED_CHANNEL}]}}",
        ]
    return "\n".join(lines) + "\n"


def _safe_state(drv: CanDbcDriver, node: str | None) -> list[str]:
    """A placeholder safe state that validates: it commands nothing and only proves the device reports."""
    witness = None
    for m in drv.rx_msgs.values():
        if not m.cycle_time or (node is not None and node in m.senders):
            continue
        for s in m.signals:
            # A signal in every frame of the message (not a multiplexed one), read as a number.
            unit = _quantity_unit(s)
            if s.multiplexer_signal is None and unit is not None:
                witness = (m, s, unit)
                break
        if witness:
            break
    head = [
        "# safe_state: commanded and read back after every run, whatever ended it. This placeholder",
        "# commands nothing and proves only that the device still reports: REPLACE it with what makes",
        "# your device safe, e.g. set: {dut.ContactorRequest: Open}, verify: dut.ContactorState == Open.",
    ]
    if witness is None:
        return [*head, "# (no cyclic signal another node sends to read back: write it yourself)"]
    m, s, unit = witness
    name = next(i.name for i in drv.signals() if f"{DEVICE}.{m.name}.{s.name}" in (i.name, *i.aliases))
    lo, hi = _range(s)
    verify = f"{name} >= {format_value(math.floor(lo), unit)} and {name} <= {format_value(math.ceil(hi), unit)}"
    return [*head, "safe_state:", "  set: {}", f"  verify: {verify}", "  within: 2 s"]


def _quantity_unit(s: Signal) -> str | None:
    """How a value in the signal's unit is written in a condition (the DBC's spelling where it reads), or None."""
    from bench.expr import parse
    from bench.units import parse_quantity

    spelling = (s.unit or "").strip()
    unit = signal_unit(spelling)
    if not unit.opaque and (not spelling or spelling in ("1", "-")):
        return ""
    for text in dict.fromkeys((spelling, unit.text)):
        try:
            parse(f"1 {text}")  # the condition grammar reads it as one quantity ...
            if not unit.opaque:
                parse_quantity(f"1 {text}")  # ... and the unit table knows it
        except ExpressionError:
            continue
        return text
    return None


def _yaml_str(text: str) -> str:
    """``text`` as a YAML scalar: plain where that is safe, else double-quoted."""
    import json

    plain = text and all(c.isalnum() or c in "._-/ " for c in text) and not text[0].isspace() and text[-1] != " "
    return text if plain else json.dumps(text)
