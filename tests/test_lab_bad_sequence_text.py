"""A lab job's sequence text and parameters go through the same loader limits as a file on disk.

In the lab, a 602-byte job whose ``sequence_text`` was a YAML alias bomb took a bench to 4 GB
and wedged it. The agent loads the text with the sequence loader, so the alias budget, the
nesting and size limits and the bounds on numbers refuse such a job in one line (exit 2), and
the bench goes on with the next job.
"""

from __future__ import annotations

import asyncio
import hashlib

from bench.lab import client
from bench.lab.protocol import Job, Result, SequenceRef, decode
from tests.labkit import SHORT, Lab, collect, lab_fixture, mosquitto_fixture  # noqa: F401  (fixtures)

HEAD = "id: BOMB\ntitle: t\nversion: 1.0.0\nbasis: {standard: t, clause: t}\nrequires: [psu]\n"


def alias_bomb() -> str:
    """Nine levels of nine aliases: about 600 bytes that would expand to 9^9 strings."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return HEAD + "\n".join(lines) + "\nsteps: [{wait: 1 s}]\n"


def text_job(text: str) -> Job:
    job = client.make_job(SequenceRef(id="BOMB", sha256=hashlib.sha256(text.encode()).hexdigest()), {}, {})
    return job.model_copy(update={"sequence_text": text})


def test_alias_bomb_and_absurd_parameters_are_refused_and_the_bench_goes_on(lab: Lab) -> None:
    lab.start_agent("bench-b", allow_text=True)
    lab.wait_online(["bench-b"])
    op = lab.broker.broker()
    bomb = text_job(alias_bomb())
    deep = text_job(HEAD + "display: " + "[" * 20000 + "]" * 20000 + "\nsteps: [{wait: 1 s}]\n")
    forever = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "1e400 s"}, {})
    digits = client.make_job(client.sequence_ref(str(SHORT)), {"voltage": "١٠٠ V"}, {})
    good = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "1 s"}, {})
    jobs = [bomb, deep, forever, digits, good]
    got = asyncio.run(
        collect(
            op,
            [f"lab/benches/+/results/{j.job}" for j in jobs],
            lambda g: len(g) >= len(jobs),
            120,
            lambda: client.submit(op, jobs, check=False),
        )
    )
    results = {r.job: r for r in (decode(Result, p) for _, p in got)}
    expected = {
        bomb.job: "aliases expand to more than",
        deep.job: "nested deeper than",
        forever.job: "1e400 is out of range",
        digits.job: "write numbers with the digits 0-9",
    }
    for job, message in expected.items():
        res = results[job]
        assert res.verdict == "REFUSED" and res.exit_code == 2, res
        assert message in res.reason and "\n" not in res.reason, res.reason
    # The bench was not wedged: the next job ran.
    assert results[good.job].verdict == "PASS", results[good.job]
    assert lab.agents["bench-b"].proc.poll() is None
