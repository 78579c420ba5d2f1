"""The lab's benches as the browser station shows them, and jobs submitted to them (docs/lab.md).

The broker is the one ``bench lab`` uses: ``BENCH_BROKER`` (with ``BENCH_MQTT_USER`` and
``BENCH_MQTT_PASSWORD``, and the TLS files of docs/lab.md). Without it the station is on its own:
no benches and no error. What is shown comes from one complete read of the benches' retained
state (bench/lab/client.py ``snapshot``), the read ``bench lab status`` makes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.clock import epoch_of
from bench.errors import LoadError
from bench.lab import client
from bench.lab.mqtt import Broker, parse_broker
from bench.lab.overview import age_text
from bench.lab.protocol import SequenceRef
from bench.ui.catalog import LibraryEntry

ENV_BROKER = "BENCH_BROKER"
# A page waits for the lab's benches this long at most; the full history is not read (benches only).
READ_LIMIT_S = 10.0


def _broker() -> Broker | None:
    url = os.environ.get(ENV_BROKER, "").strip()
    return parse_broker(url) if url else None


async def lab_benches() -> list[dict[str, Any]]:
    """Every bench of the lab as last known, sorted by name; [] without ``BENCH_BROKER``.

    Each: ``{"name", "online", "state" (idle|running|tripped|offline|?), "job", "run_id", "step",
    "steps_done", "steps_total", "reason", "age" (of the state, e.g. '45s', or ''), "station",
    "dut", "simulated", "devices", "sequences" (how many the bench offers), "lease" (holder or None)}``.
    A broker that cannot be read is one BenchError line.
    """
    broker = _broker()
    if broker is None:
        return []
    snap = await client.snapshot(broker, limit=READ_LIMIT_S, history=False)
    now = time.time()
    out = []
    for name, bv in sorted(snap.benches.items()):
        online = bool(bv.status and bv.status.online)
        st, caps = bv.state, bv.caps
        published = epoch_of(st.published_utc) if st is not None else None
        out.append(
            {
                "name": name,
                "online": online,
                "state": (st.state if st else "?") if online else "offline",
                "job": st.job if st else None,
                "run_id": st.run_id if st else None,
                "step": st.step if st else None,
                "steps_done": st.steps_done if st else 0,
                "steps_total": st.steps_total if st else 0,
                "reason": st.reason if st else "",
                "age": age_text(now - published) if published is not None else "",
                "station": caps.station if caps else "",
                "dut": caps.dut if caps else "",
                "simulated": caps.simulated if caps else None,
                "devices": list(caps.devices) if caps else [],
                "sequences": sum(len(v) for v in caps.sequences.values()) if caps else 0,
                "lease": bv.lease.holder if bv.lease and bv.lease.holder else None,
            }
        )
    return out


async def submit_to_lab(entry: LibraryEntry, params: dict[str, str], bench: str | None, operator: str) -> str:
    """Queue a job of ``entry`` (named by id and SHA-256, as ``bench lab submit`` does) for any bench
    that has it, or for ``bench`` only; the job id. Refused in one line when no online bench can take it."""
    broker = _broker()
    if broker is None:
        raise LoadError(f"no lab to submit to: {ENV_BROKER} is not set")
    require = {"bench": bench} if bench else {}
    job = client.make_job(SequenceRef(id=entry.id, sha256=entry.sha256), params, require)
    job = job.model_copy(update={"submitter": operator})
    ids = await client.submit(broker, [job])
    return ids[0]
