"""In-process CAN for tests: nodes on a fresh channel, and frames built one way."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import can

_channels = itertools.count()


def fresh_channel(prefix: str) -> str:
    """A channel name no other test uses, so that no frame of another test reaches this one."""
    return f"{prefix}-{next(_channels)}"


def node(channel: str, fd: bool = False) -> Any:
    return can.Bus(interface="inproc", channel=channel, fd=fd)


def frame(can_id: int, data: bytes, *, fd: bool = False, brs: bool = False) -> can.Message:
    """A data frame; an id above 0x7FF is a 29-bit one."""
    return can.Message(arbitration_id=can_id, is_extended_id=can_id > 0x7FF, data=data, is_fd=fd, bitrate_switch=brs)


@contextlib.asynccontextmanager
async def link(*fd: bool) -> AsyncIterator[tuple[list[Any], list[list[can.Message]]]]:
    """One node per entry of ``fd`` (an FD node or a classic one) on a fresh channel, each with the
    list of frames it receives; every node is shut down on the way out."""
    channel = fresh_channel("link")
    nodes = [node(channel, fd=f) for f in fd]
    received: list[list[can.Message]] = [[] for _ in nodes]
    for bus, got in zip(nodes, received, strict=True):
        bus.add_listener(got.append)
    try:
        yield nodes, received
    finally:
        for bus in nodes:
            bus.shutdown()
