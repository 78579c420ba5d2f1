"""Free TCP ports on the loopback, for the servers that tests and benchmarks start.

No pytest here: the scripts in benchmarks/ import it too.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Ports the kernel hands out to outgoing connections (a browser's, a client's): a port taken from
# this range can be taken again by any connect() between the probe and the server's bind.
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000  # above the usual fixed service ports


def _below_ephemeral() -> range:
    try:
        first = int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768  # Linux's default
    return range(_LOWEST, max(first, _LOWEST + 1000))


def free_ports(n: int) -> list[int]:
    """n distinct ports that were free a moment ago, below the kernel's ephemeral range (so no
    outgoing connection can take one before the server binds it), picked at random so that
    parallel test workers rarely pick the same."""
    pick = random.SystemRandom()
    candidates = _below_ephemeral()
    socks: list[socket.socket] = []
    try:
        for _ in range(1000):
            if len(socks) == n:
                return [s.getsockname()[1] for s in socks]
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", pick.choice(candidates)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        raise RuntimeError(f"no {n} free ports in {candidates.start}-{candidates.stop - 1}")
    finally:
        for s in socks:
            s.close()


def free_port_offset(*ports: int) -> int:
    """An offset (for ``bench sim serve --port-offset``) that puts every one of ``ports`` on a port
    that was free a moment ago: a station's fixed ports moved out of the way of other servers."""
    for _ in range(100):
        (probe,) = free_ports(1)
        offset = probe - ports[0]
        moved = [p + offset for p in ports[1:]]
        if not all(1024 <= p <= 65535 for p in moved):
            continue
        socks: list[socket.socket] = []
        try:
            for p in moved:
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", p))
            return offset
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no free offset for ports {ports}")
