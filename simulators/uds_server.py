"""The BMS's diagnostic server: UDS (ISO 14229) ReadDataByIdentifier over ISO-TP (ISO 15765-2).

Deliberately hand-written rather than built on can-isotp: the bench's driver uses can-isotp and
udsoncan, so an independent implementation here makes every in-process run an interoperability
test of the two (as python-can's back-to-back tests do). Everything runs on the event loop: a
frame arrives through the bus listener, replies leave with ``bus.send``, and the only waits
(flow control from the tester, STmin between consecutive frames) are loop timers, so it works
unchanged in virtual time.

Normal 11-bit addressing, physical requests on ``request_id`` (0x7E0), responses on
``response_id`` (0x7E8), frames padded to 8 bytes with 0xCC. Services: 0x22
ReadDataByIdentifier (one or more DIDs; NRC 0x31 when none is supported, 0x13 for a bad
length), 0x3E TesterPresent and, for an ECU with a DTC memory (simulators/dtc.py), 0x19
ReadDTCInformation sub-function 0x02 reportDTCByStatusMask (0x12 for other sub-functions) and
0x14 ClearDiagnosticInformation (all DTCs, 0xFFFFFF, or one; 0x31 for another group); anything
else gets NRC 0x11.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import can

from simulators.dtc import STATUS_AVAILABILITY_MASK, DtcMemory

PAD = 0xCC
NRC_SERVICE_NOT_SUPPORTED = 0x11
NRC_SUBFUNCTION_NOT_SUPPORTED = 0x12
NRC_INCORRECT_LENGTH = 0x13
NRC_REQUEST_OUT_OF_RANGE = 0x31
# N_Bs: how long the server waits for the tester's flow control after a first frame.
_N_BS_S = 1.0
# N_Cr: longest gap between consecutive frames of a request before it is dropped.
_N_CR_S = 1.0


class UdsServer:
    def __init__(
        self,
        dids: Mapping[int, bytes],
        send: Callable[[can.Message], None],
        request_id: int = 0x7E0,
        response_id: int = 0x7E8,
        *,
        dtcs: DtcMemory | None = None,
    ) -> None:
        self.dids = dict(dids)
        self.dtcs = dtcs
        self._send = send
        self.request_id = request_id
        self.response_id = response_id
        # reception of a segmented request
        self._rx_buf = bytearray()
        self._rx_len = 0
        self._rx_sn = 0
        self._rx_deadline: asyncio.TimerHandle | None = None
        # transmission of a segmented response
        self._tx_buf = b""
        self._tx_pos = 0
        self._tx_sn = 0
        self._tx_wait_fc: asyncio.TimerHandle | None = None
        self._tx_next: asyncio.TimerHandle | None = None
        self.requests = 0

    # -- CAN side ---------------------------------------------------------------------------

    def on_frame(self, frame: can.Message) -> None:
        if frame.arbitration_id != self.request_id or frame.is_extended_id or not frame.data:
            return
        data = bytes(frame.data)
        kind = data[0] >> 4
        if kind == 0:  # single frame
            length = data[0] & 0x0F
            if 1 <= length <= len(data) - 1:
                self._cancel_tx()
                self._handle(data[1 : 1 + length])
        elif kind == 1 and len(data) == 8:  # first frame: accept, ask for the rest in one block
            self._rx_len = ((data[0] & 0x0F) << 8) | data[1]
            self._rx_buf = bytearray(data[2:8])
            self._rx_sn = 1
            self._transmit(bytes([0x30, 0x00, 0x00]))
            self._arm_rx_timeout()
        elif kind == 2 and self._rx_len:  # consecutive frame
            if data[0] & 0x0F != self._rx_sn:
                self._drop_rx()  # wrong sequence number: ISO-TP aborts the reception
                return
            self._rx_sn = (self._rx_sn + 1) & 0x0F
            self._rx_buf += data[1:]
            if len(self._rx_buf) >= self._rx_len:
                request = bytes(self._rx_buf[: self._rx_len])
                self._drop_rx()
                self._handle(request)
            else:
                self._arm_rx_timeout()
        elif kind == 3 and self._tx_wait_fc is not None:  # flow control for our response
            self._on_flow_control(data)

    def shutdown(self) -> None:
        self._cancel_tx()
        self._drop_rx()

    def _transmit(self, payload: bytes) -> None:
        data = payload + bytes([PAD]) * (8 - len(payload))
        self._send(can.Message(arbitration_id=self.response_id, is_extended_id=False, data=data, dlc=8))

    # -- reception timeouts -----------------------------------------------------------------

    def _arm_rx_timeout(self) -> None:
        if self._rx_deadline is not None:
            self._rx_deadline.cancel()
        self._rx_deadline = asyncio.get_running_loop().call_later(_N_CR_S, self._drop_rx)

    def _drop_rx(self) -> None:
        if self._rx_deadline is not None:
            self._rx_deadline.cancel()
        self._rx_deadline = None
        self._rx_len = 0
        self._rx_buf = bytearray()

    # -- segmented transmission -------------------------------------------------------------

    def _respond(self, payload: bytes) -> None:
        if len(payload) <= 7:
            self._transmit(bytes([len(payload)]) + payload)
            return
        self._tx_buf = payload
        self._transmit(bytes([0x10 | (len(payload) >> 8), len(payload) & 0xFF]) + payload[:6])
        self._tx_pos = 6
        self._tx_sn = 1
        self._tx_wait_fc = asyncio.get_running_loop().call_later(_N_BS_S, self._cancel_tx)

    def _on_flow_control(self, data: bytes) -> None:
        status = data[0] & 0x0F
        if status == 1:  # WAIT: keep waiting for the next flow control
            return
        if self._tx_wait_fc is not None:
            self._tx_wait_fc.cancel()
            self._tx_wait_fc = None
        if status != 0:  # overflow or invalid: abort the response
            self._cancel_tx()
            return
        block = data[1] if len(data) > 1 else 0
        stmin = data[2] if len(data) > 2 else 0
        # STmin 0x00-0x7F is milliseconds, 0xF1-0xF9 is 100-900 us; other values mean 127 ms.
        gap = stmin / 1000.0 if stmin <= 0x7F else (stmin - 0xF0) / 10000.0 if 0xF1 <= stmin <= 0xF9 else 0.127
        self._send_block(block, gap)

    def _send_block(self, block: int, gap: float) -> None:
        self._tx_next = None
        sent = 0
        while self._tx_pos < len(self._tx_buf):
            chunk = self._tx_buf[self._tx_pos : self._tx_pos + 7]
            self._transmit(bytes([0x20 | self._tx_sn]) + chunk)
            self._tx_pos += len(chunk)
            self._tx_sn = (self._tx_sn + 1) & 0x0F
            sent += 1
            if self._tx_pos >= len(self._tx_buf):
                break
            if block and sent >= block:
                self._tx_wait_fc = asyncio.get_running_loop().call_later(_N_BS_S, self._cancel_tx)
                return
            if gap > 0.0:
                left = block - sent if block else 0
                self._tx_next = asyncio.get_running_loop().call_later(gap, self._send_block, left, gap)
                return
        self._tx_buf = b""

    def _cancel_tx(self) -> None:
        for handle in (self._tx_wait_fc, self._tx_next):
            if handle is not None:
                handle.cancel()
        self._tx_wait_fc = self._tx_next = None
        self._tx_buf = b""

    # -- UDS --------------------------------------------------------------------------------

    def _handle(self, request: bytes) -> None:
        self.requests += 1
        sid = request[0]
        if sid == 0x22:
            self._respond(self.read_data_by_identifier(request))
        elif sid == 0x19 and self.dtcs is not None:
            self._respond(self.read_dtc_information(request))
        elif sid == 0x14 and self.dtcs is not None:
            self._respond(self.clear_diagnostic_information(request))
        elif sid == 0x3E and len(request) == 2:
            if not request[1] & 0x80:  # suppressPosRspMsgIndicationBit
                self._respond(bytes([0x7E, request[1] & 0x7F]))
        else:
            self._respond(bytes([0x7F, sid, NRC_SERVICE_NOT_SUPPORTED]))

    def read_data_by_identifier(self, request: bytes) -> bytes:
        """The response to a 0x22 request (positive or negative), as bytes."""
        body = request[1:]
        if not body or len(body) % 2:
            return bytes([0x7F, 0x22, NRC_INCORRECT_LENGTH])
        out = bytearray([0x62])
        for k in range(0, len(body), 2):
            did = (body[k] << 8) | body[k + 1]
            if did in self.dids:
                out += body[k : k + 2] + self.dids[did]
        if len(out) == 1:
            return bytes([0x7F, 0x22, NRC_REQUEST_OUT_OF_RANGE])
        return bytes(out)

    def read_dtc_information(self, request: bytes) -> bytes:
        """The response to a 0x19 request; NRC checks in the order of ISO 14229-1 (length, sub-function, length)."""
        if len(request) < 2:
            return bytes([0x7F, 0x19, NRC_INCORRECT_LENGTH])
        if request[1] != 0x02:  # reportDTCByStatusMask is the one sub-function this server has
            return bytes([0x7F, 0x19, NRC_SUBFUNCTION_NOT_SUPPORTED])
        if len(request) != 3 or self.dtcs is None:
            return bytes([0x7F, 0x19, NRC_INCORRECT_LENGTH])
        out = bytearray([0x59, 0x02, STATUS_AVAILABILITY_MASK])
        for number, status in self.dtcs.matching(request[2]):
            out += number.to_bytes(3, "big") + bytes([status])
        return bytes(out)

    def clear_diagnostic_information(self, request: bytes) -> bytes:
        """The response to a 0x14 request: groupOfDTC is three bytes, no memory selection."""
        if len(request) != 4 or self.dtcs is None:
            return bytes([0x7F, 0x14, NRC_INCORRECT_LENGTH])
        if not self.dtcs.clear(int.from_bytes(request[1:4], "big")):
            return bytes([0x7F, 0x14, NRC_REQUEST_OUT_OF_RANGE])
        return bytes([0x54])
