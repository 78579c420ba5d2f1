"""UDS identification and DTCs of a DUT over the CAN link, on the event loop: no threads, no blocking calls.

udsoncan's ``Client`` blocks and can-isotp's ``CanStack`` / ``NotifierBasedCanStack`` run a
thread on the wall clock; on the in-process link both would stall or desynchronise the
virtual-time loop. So this module uses the two libraries' pure layers only:

* **can-isotp** ``TransportLayerLogic``: the ISO 15765-2 state machine (single frame, first /
  consecutive frames, flow control, padding) with non-blocking ``rxfn`` / ``txfn`` callbacks.
  We call ``process()`` whenever a frame arrives or a request is queued, so the stack moves
  exactly when the bus does. Its timers (N_Bs, N_Cr, STmin) read ``perf_counter`` in the
  library; here they read the event loop's clock (``_LoopTimer``), like the request timeout
  (P2 / P2*). On the wall clock, a loaded machine in a virtual-time run took more than N_Cr's
  1 s of wall time between two consecutive frames sent 1 ms apart, and the transfer failed
  (``UnexpectedConsecutiveFrameError``).
* **udsoncan** ``services.ReadDataByIdentifier``, ``ReadDTCInformation`` (sub-function 0x02,
  reportDTCByStatusMask) and ``ClearDiagnosticInformation``: build the request and interpret the
  response (negative responses, echoes, codecs, DTC records), exactly as its blocking client would.

Frames to and from the DUT go through the owning driver (``send`` and :meth:`UdsClient.feed`),
so they land in the run's raw CAN record like every other frame.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import can
import isotp
import udsoncan
from udsoncan.services import ClearDiagnosticInformation, ReadDataByIdentifier, ReadDTCInformation

from bench.dtccodes import ALL_DTC_GROUPS, Dtc
from drivers.uds_names import DID_ECU_SERIAL, DID_SOFTWARE_VERSION, DID_VIN, IDENTITY_DIDS, UdsError

_NRC_RESPONSE_PENDING = 0x78
# Default P2 / P2* server timings (ISO 14229-2): a first answer within 50 ms on the bus, longer
# after "response pending". We allow more than P2 for the first reply: a loaded tester PC must
# not turn into a failed identification.
P2_S = 1.0
P2_STAR_S = 5.0


class TextCodec(udsoncan.DidCodec):
    """Printable ASCII of any length (ECU serial, software version): reads the rest of the response.

    Trailing NUL and space padding is dropped, as ECUs pad fixed-size fields with either.
    """

    def decode(self, did_payload: bytes) -> Any:
        return did_payload.decode("ascii", "replace").rstrip("\x00 ")

    def __len__(self) -> int:
        raise udsoncan.DidCodec.ReadAllRemainingData


CODECS: dict[int | str, Any] = {
    DID_VIN: udsoncan.AsciiCodec(17),
    DID_ECU_SERIAL: TextCodec(),
    DID_SOFTWARE_VERSION: TextCodec(),
}


def _loop_ns() -> int:
    return int(asyncio.get_running_loop().time() * 1e9)


class _LoopTimer(isotp.tools.Timer):
    """can-isotp's timer on the event loop's clock: virtual time in a simulated run."""

    def start(self, timeout: float | None = None) -> None:
        if timeout is not None:
            self.set_timeout(timeout)
        self.start_time = _loop_ns()

    def elapsed_ns(self) -> int:
        return 0 if self.start_time is None else _loop_ns() - self.start_time

    def elapsed(self) -> float:
        return self.elapsed_ns() / 1e9


class _LoopTransport(isotp.TransportLayerLogic):
    """The ISO-TP state machine with every timer on the loop clock (the library makes them anew)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timer_tx_stmin = _LoopTimer(timeout=0)

    def load_params(self) -> None:
        super().load_params()
        self.timer_rx_fc = _LoopTimer(timeout=float(self.params.rx_flowcontrol_timeout) / 1000)
        self.timer_rx_cf = _LoopTimer(timeout=float(self.params.rx_consecutive_frame_timeout) / 1000)

    def _start_rx_fc_timer(self) -> None:
        self.timer_rx_fc = _LoopTimer(timeout=float(self.params.rx_flowcontrol_timeout) / 1000)
        self.timer_rx_fc.start()

    def _start_rx_cf_timer(self) -> None:
        self.timer_rx_cf = _LoopTimer(timeout=float(self.params.rx_consecutive_frame_timeout) / 1000)
        self.timer_rx_cf.start()


class UdsClient:
    """One ISO-TP channel (tester side) and a ReadDataByIdentifier helper on top."""

    def __init__(
        self,
        send: Callable[[can.Message], None],
        tx_id: int = 0x7E0,
        rx_id: int = 0x7E8,
        *,
        padding: int = 0xCC,
        p2: float = P2_S,
        p2_star: float = P2_STAR_S,
    ) -> None:
        self._send = send
        self.tx_id = tx_id
        self.rx_id = rx_id
        self.p2 = p2
        self.p2_star = p2_star
        self._rx: deque[isotp.CanMessage] = deque()
        self._errors: list[str] = []
        self._stack = _LoopTransport(
            rxfn=self._rxfn,
            txfn=self._txfn,
            address=isotp.Address(isotp.AddressingMode.Normal_11bits, txid=tx_id, rxid=rx_id),
            error_handler=self._on_error,
            params={"tx_padding": padding, "tx_data_min_length": 8, "blocking_send": False, "stmin": 0},
        )
        self._reply: asyncio.Future[bytes] | None = None
        self._lock = asyncio.Lock()
        # DTCStatusAvailabilityMask of the last ReadDTCInformation answer: the bits the ECU supports.
        self.dtc_status_availability_mask: int | None = None

    # -- CAN side ---------------------------------------------------------------------------

    def feed(self, msg: can.Message) -> None:
        """A frame from the DUT's response id; call on the event loop."""
        if msg.arbitration_id != self.rx_id or msg.is_extended_id:
            return
        self._rx.append(isotp.CanMessage(arbitration_id=msg.arbitration_id, data=bytes(msg.data), dlc=msg.dlc))
        self._pump()

    def _rxfn(self, timeout: float) -> isotp.CanMessage | None:
        # Never blocks, whatever the timeout: frames are queued by feed() before process() runs.
        return self._rx.popleft() if self._rx else None

    def _txfn(self, msg: isotp.CanMessage) -> None:
        self._send(
            can.Message(arbitration_id=msg.arbitration_id, data=bytes(msg.data), dlc=msg.dlc, is_extended_id=False)
        )

    def _on_error(self, error: Exception) -> None:
        self._errors.append(f"{type(error).__name__}: {error}")

    def _pump(self) -> None:
        self._stack.process()
        while True:
            payload = self._stack.recv()
            if payload is None:
                break
            if self._reply is not None and not self._reply.done():
                self._reply.set_result(bytes(payload))

    # -- UDS --------------------------------------------------------------------------------

    async def request(self, payload: bytes) -> udsoncan.Response:
        """Send one request and wait for its final response (skipping "response pending")."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            self._errors.clear()
            timeout = self.p2
            self._reply = loop.create_future()
            self._stack.send(payload)
            self._pump()
            try:
                while True:
                    try:
                        async with asyncio.timeout(timeout):
                            raw = await self._reply
                    except TimeoutError:
                        extra = f" ({self._errors[-1]})" if self._errors else ""
                        raise UdsError(
                            f"no UDS response on 0x{self.rx_id:03X} within {timeout:g} s"
                            f" to request {payload.hex(' ').upper()} on 0x{self.tx_id:03X}{extra}"
                        ) from None
                    response = udsoncan.Response.from_payload(raw)
                    if not response.positive and response.code == _NRC_RESPONSE_PENDING:
                        timeout = self.p2_star
                        self._reply = loop.create_future()
                        continue
                    return response
            finally:
                self._reply = None

    async def read_did(self, did: int) -> Any:
        # A DID without a known codec is read as text, so any identifier can be asked for.
        codecs = CODECS if did in CODECS else {**CODECS, did: TextCodec()}
        request = ReadDataByIdentifier.make_request([did], didconfig=codecs)
        response = await self._checked(request, f"DID 0x{did:04X}")
        try:
            interpreted = ReadDataByIdentifier.interpret_response(response, [did], didconfig=codecs)
        except Exception as exc:  # udsoncan raises several types for malformed payloads
            raise UdsError(f"DID 0x{did:04X}: cannot decode {_hex(response.original_payload)}: {exc}") from None
        return interpreted.service_data.values[did]

    async def read_dtcs(self, status_mask: int = 0xFF) -> list[Dtc]:
        """ReadDTCInformation reportDTCByStatusMask: every DTC with a status bit in ``status_mask``."""
        what = f"read DTCs by status mask 0x{status_mask:02X}"
        request = ReadDTCInformation.make_request(
            ReadDTCInformation.Subfunction.reportDTCByStatusMask, status_mask=status_mask
        )
        response = await self._checked(request, what)
        try:
            interpreted = ReadDTCInformation.interpret_response(
                response, ReadDTCInformation.Subfunction.reportDTCByStatusMask
            )
        except Exception as exc:  # udsoncan raises several types for malformed payloads
            raise UdsError(f"{what}: cannot decode {_hex(response.original_payload)}: {exc}") from None
        data = interpreted.service_data
        availability = data.status_availability
        self.dtc_status_availability_mask = None if availability is None else availability.get_byte_as_int()
        return [Dtc(dtc.id, dtc.status.get_byte_as_int()) for dtc in data.dtcs]

    async def clear_dtcs(self, group: int = ALL_DTC_GROUPS) -> None:
        """ClearDiagnosticInformation of ``group``: 0xFFFFFF is all DTCs, else one DTC or functional group."""
        request = ClearDiagnosticInformation.make_request(group)
        response = await self._checked(request, f"clear DTCs 0x{group:06X}")
        ClearDiagnosticInformation.interpret_response(response)

    async def _checked(self, request: udsoncan.Request, what: str) -> udsoncan.Response:
        """The final response to ``request``; a UdsError when it is negative, malformed or for another service."""
        response = await self.request(request.get_payload())
        if not response.valid or response.service is not request.service:
            raise UdsError(f"{what}: invalid response {_hex(response.original_payload)}")
        if not response.positive:
            raise UdsError(f"{what}: negative response 0x{response.code:02X} ({response.code_name})")
        return response

    async def identify(self, names: Iterable[str] = IDENTITY_DIDS) -> dict[str, str]:
        """VIN, ECU serial and software version, one DID per request (their lengths differ by ECU)."""
        return {name: str(await self.read_did(IDENTITY_DIDS[name])) for name in names}


def _hex(data: bytes | None) -> str:
    return (data or b"").hex(" ").upper()
