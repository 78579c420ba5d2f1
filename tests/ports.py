"""Free TCP ports on the loopback, for the servers that tests and benchmarks start.

No pytest here: the scripts in benchmarks/ import it too.
"""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """n distinct ports that were free a moment ago (the kernel picks them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
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
