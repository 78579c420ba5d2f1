"""What a CAN driver needs of UDS before it connects: the identification DIDs and the error type.

Kept apart from :mod:`drivers.uds` (can-isotp and udsoncan behind it) so that checking a station
(`bench validate`) does not load the UDS stack; a run loads it when it identifies a DUT.
"""

from __future__ import annotations

# ISO 14229-1 Annex C identifiers read for identification.
DID_VIN = 0xF190
DID_ECU_SERIAL = 0xF18C
DID_SOFTWARE_VERSION = 0xF195
IDENTITY_DIDS = {"vin": DID_VIN, "ecu_serial": DID_ECU_SERIAL, "software_version": DID_SOFTWARE_VERSION}


class UdsError(Exception):
    """The DUT refused or did not answer; the message says which DID and why."""
