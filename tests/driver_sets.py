"""Setting a driver against a scripted instrument in virtual time: connect, let the first poll
pass, set, and check that the instrument saw exactly the script. Shared by the driver protocol tests."""

from __future__ import annotations

from typing import Any

import pytest

from bench.errors import DeviceError
from tests.expected_protocol import OK, Harness, ScpiScript, connected, run_virtual, settle


def set_values(
    driver: Any, inproc: str, script: ScpiScript, values: dict[str, float]
) -> tuple[dict[str, float], Harness]:
    """What ``driver.set(values)`` returns, and the harness with what it published."""
    harness = Harness()

    async def main() -> dict[str, float]:
        async with connected(driver, harness, {inproc: script}) as d:
            await settle()
            result: dict[str, float] = await d.set(values)
            return result

    result = run_virtual(main)
    script.assert_done()
    return result, harness


def refused_sets(driver: Any, inproc: str, script: ScpiScript, attempts: list[dict[str, float]]) -> list[str]:
    """The message of the DeviceError that each of ``attempts`` must raise, in order."""

    async def main() -> list[str]:
        errors = []
        async with connected(driver, Harness(), {inproc: script}) as d:
            await settle()
            for values in attempts:
                with pytest.raises(DeviceError) as info:
                    await d.set(values)
                errors.append(str(info.value))
        return errors

    errors = run_virtual(main)
    script.assert_done()
    return errors


def assert_set_reads_back(
    driver: Any,
    inproc: str,
    before: list[tuple[str, str | None]],
    signal: str,
    value: float,
    line: str,
    readback: tuple[str, str],
    expected: float,
) -> None:
    """After the ``before`` lines (connect, first poll), setting ``signal`` to ``value`` writes
    ``line``, reads it back with the query and reply of ``readback``, checks the error queue,
    returns and publishes ``expected``."""
    script = ScpiScript([*before, (line, None), readback, ("SYST:ERR?", OK)])
    result, harness = set_values(driver, inproc, script, {signal: value})
    assert result == {signal: expected}
    assert harness.last(f"{driver.name}.{signal}") == expected
