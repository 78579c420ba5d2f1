"""The DUTs' diagnostic trouble codes in a run's record: read at the start and at the end.

Every connected device whose driver reaches a DTC memory (``Driver.supports_dtcs``: a CAN
device with ``uds:``) is read with ``bench.dtccodes.RECORD_MASK`` once the devices are connected
and identified, and again once the safe state was read back, before the devices are closed.
Each read is one ``dtcs_read`` event and one entry of ``result.json``'s ``dtcs``. A read that
fails is recorded with its error and never changes the verdict: the record says what the DUT
reported, it does not judge it (that is what a ``check_dtcs`` step is for).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bench.dtccodes import RECORD_MASK
from bench.errors import BenchError
from bench.events import EventKind
from bench.result import DtcEntry, DtcRead, rounded

if TYPE_CHECKING:
    from bench.runcontext import RunContext

# A read is one UDS request (P2 / P2* bound it in the client); this only bounds a DUT that keeps
# answering "response pending".
DTC_READ_TIMEOUT = 15.0


async def record_dtcs(ctx: RunContext, at: str) -> None:
    """Read the DTCs of every connected device that has them, and record each read."""
    for name in list(ctx.connected):
        driver = ctx.plan.drivers[name]
        if not driver.supports_dtcs:
            continue
        read = DtcRead(device=name, at=at, t=0.0)
        try:
            async with asyncio.timeout(DTC_READ_TIMEOUT):
                dtcs = await driver.read_dtcs(RECORD_MASK)
            read.dtcs = [DtcEntry(**dtc.to_record()) for dtc in dtcs]
        except TimeoutError:
            read.error = f"{name}: no answer within {DTC_READ_TIMEOUT:g} s"
        except (BenchError, OSError) as exc:
            read.error = str(exc)
        except Exception as exc:  # a driver bug: recorded, and the run goes on to its end
            read.error = f"{name}: unexpected error: {type(exc).__name__}: {exc}"
        read.t = rounded(ctx.rel(ctx.now()))
        ctx.dtc_reads.append(read)
        fields = {"error": read.error} if read.error else {"dtcs": [d.model_dump() for d in read.dtcs]}
        ctx.event(EventKind.DTCS_READ, device=name, at=at, **fields)
