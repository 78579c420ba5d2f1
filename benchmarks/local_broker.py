"""The mosquitto of a benchmark: its own process on a free 127.0.0.1 port, anonymous (a
measurement on the loopback, not a lab), with the settings the benchmark asks for."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.ports import free_ports


def start_broker(folder: Path, settings: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """mosquitto with ``settings`` (lines of mosquitto.conf) written to ``folder``; returns once it
    accepts connections. One line ``error: ...`` and exit 1 when it is missing or does not start."""
    if not shutil.which("mosquitto") or not shutil.which("mosquitto_sub"):
        sys.exit("error: mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)")
    (port,) = free_ports(1)
    conf = folder / "mosquitto.conf"
    user = ["user root"] if os.geteuid() == 0 else []
    conf.write_text("\n".join([*user, f"listener {port} 127.0.0.1", "allow_anonymous true", *settings, ""]))
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    sys.exit("error: mosquitto did not start")
