"""CAN FD on a CAN device: the station's ``fd`` and ``data_bitrate`` keys, checked against the DBC.

python-can opens an FD bus from its own keywords (``fd=True``, and ``data_bitrate`` where the
interface takes one), so the device passes them to ``can.Bus`` on every interface: physical
ones, the in-process link and socketcand (whose client ignores them; docs/served.md).

An FD message in the DBC (cantools' ``is_fd``: ``VFrameFormat`` ``StandardCAN_FD`` or
``ExtendedCAN_FD``) on a device whose bus is classic is refused when the station is loaded: a
classic controller could neither send nor receive it, and the run would fail later with an
error frame instead of a line that names the message.

A received frame of more than 8 bytes is FD whatever its ``is_fd`` says: python-can's socketcand
client delivers FD frames with ``is_fd`` false and all their bytes, and the DBC decodes them as
they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cantools.database.can import Database, Message

from bench.device import ConfigError


def fd_bus_config(config: Mapping[str, Any], can_cfg: Mapping[str, Any], db: Database, label: str) -> dict[str, Any]:
    """The ``can.Bus`` keywords of a device: its ``can:`` mapping with ``fd`` and ``data_bitrate`` added.

    ``fd: true`` may be written on the device or inside ``can:`` (python-can's keyword, as
    docs/served.md shows); the device's own key wins.
    """
    fd = config.get("fd", can_cfg.get("fd", False))
    if not isinstance(fd, bool):
        raise ConfigError(f"'fd' must be true or false, got {fd!r}", "fd" if "fd" in config else "can")
    out = dict(can_cfg)
    rate = config.get("data_bitrate")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ConfigError(
                f"'data_bitrate' must be a bit rate in bit/s such as 2000000, got {rate!r}", "data_bitrate"
            )
        if not fd:
            raise ConfigError("'data_bitrate' is the CAN FD data phase's bit rate: it needs 'fd: true'", "data_bitrate")
        out["data_bitrate"] = rate
    if fd:
        out["fd"] = True
    else:
        out.pop("fd", None)
        fd_messages = [m for m in db.messages if m.is_fd]
        if fd_messages:
            m = fd_messages[0]
            raise ConfigError(
                f"{label}: message {m.name} is a CAN FD frame ({m.length} bytes) and this device's bus is classic:"
                " give the device 'fd: true' if its bus is CAN FD",
                "dbc",
            )
    return out


def bit_rate_switch(m: Message) -> bool:
    """Whether the bench sends an FD message with BRS: the DBC's ``CANFD_BRS`` (Vector's attribute), else yes."""
    if not m.is_fd:
        return False
    attribute = m.dbc.attributes.get("CANFD_BRS") if m.dbc is not None else None
    return attribute is None or int(attribute.value) == 1
