"""``bench agent`` and ``bench lab ...``: a lab of benches on one MQTT broker (docs/lab.md).

Registered on the main app by ``bench/cli.py``. aiomqtt is imported inside the commands, so
``bench run`` and ``bench --help`` never need a broker or its client.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bench.cli_args import parse_pairs
from bench.errors import LoadError

if TYPE_CHECKING:
    from bench.lab.mqtt import Broker

lab_app = typer.Typer(no_args_is_help=True, help="A lab of benches on one MQTT broker: jobs, status, leases.")

BrokerOpt = Annotated[
    str,
    typer.Option(
        "--broker",
        envvar="BENCH_BROKER",
        help="mqtt://[user:password@]host:port or mqtts://... (TLS); env BENCH_BROKER",
    ),
]
UserOpt = Annotated[str | None, typer.Option("--user", help="broker user [env BENCH_MQTT_USER]")]
PasswordOpt = Annotated[str | None, typer.Option("--password", help="broker password [env BENCH_MQTT_PASSWORD]")]
PrefixOpt = Annotated[str, typer.Option("--prefix", help="root of the lab's topic tree")]
LabKeysOpt = Annotated[
    Path | None,
    typer.Option(
        "--lab-keys",
        envvar="BENCH_LAB_KEYS",
        help="file of '<bench id> <public key>' lines: count only results signed by that bench [env BENCH_LAB_KEYS]",
    ),
]
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


def _broker(url: str, user: str | None, password: str | None, prefix: str) -> Broker:
    from bench.lab.mqtt import parse_broker

    return parse_broker(url, user, password, prefix)


def _keys(path: Path | None) -> dict[str, str] | None:
    from bench.lab.trust import read_lab_keys

    return None if path is None else read_lab_keys(path)


def agent(
    station: Annotated[Path, typer.Option(help="station file of this bench")],
    broker: BrokerOpt = DEFAULT_BROKER,
    name: Annotated[str | None, typer.Option("--id", help="bench id [default: the station id]")] = None,
    library: Annotated[
        list[Path] | None, typer.Option(help="more sequence folders offered (besides the station's lab.library)")
    ] = None,
    reports: Annotated[Path, typer.Option(help="where run folders are written")] = Path("reports"),
    user: UserOpt = None,
    password: PasswordOpt = None,
    prefix: PrefixOpt = "lab",
    requeue_grace: Annotated[
        float, typer.Option(help="seconds a bench must stay offline before its job is taken again")
    ] = 3.0,
    lab_keys: LabKeysOpt = None,
) -> None:
    """Put this bench online: take matching jobs from the lab's queue and stream their events."""
    from bench.lab.agent import Agent, run_agent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("mqtt").setLevel(logging.WARNING)
    a = Agent(
        station,
        _broker(broker, user, password, prefix),
        bench_id=name,
        library=library,
        reports=reports,
        requeue_grace=requeue_grace,
        lab_keys=_keys(lab_keys),
    )
    if not a.library:
        raise LoadError("no sequences to offer: set lab.library in the station file or give --library")
    run_agent(a)


@lab_app.command()
def submit(
    sequence: Annotated[
        str, typer.Argument(help="sequence file (its id and SHA-256 are sent, not its text) or ID@SHA256")
    ],
    require: Annotated[
        list[str] | None, typer.Option("--require", "-r", help="capability the bench must have: key=value")
    ] = None,
    param: Annotated[list[str] | None, typer.Option("-p", "--param", help="override a parameter: name=value")] = None,
    seed: Annotated[int, typer.Option(help="seed of the simulators' random numbers")] = 1,
    count: Annotated[int, typer.Option(help="queue this many identical jobs")] = 1,
    bench: Annotated[str | None, typer.Option(help="send to this bench directly (needs your lease on it)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job to its verdict; exit with its code")] = False,
    check: Annotated[bool, typer.Option("--check/--no-check", help="refuse a job no online bench can take")] = True,
    connect_timeout: Annotated[
        float, typer.Option(help="while the broker cannot be reached, keep trying this many seconds")
    ] = 30.0,
    broker: BrokerOpt = DEFAULT_BROKER,
    user: UserOpt = None,
    password: PasswordOpt = None,
    prefix: PrefixOpt = "lab",
    lab_keys: LabKeysOpt = None,
) -> None:
    """Queue a job; an idle bench whose capabilities match takes it."""
    from bench.lab import client

    b = _broker(broker, user, password, prefix)
    keys = _keys(lab_keys)
    ref = client.sequence_ref(sequence)
    params = parse_pairs(param, "-p")
    if Path(sequence).is_file():
        # Unknown parameter names are refused here; units and ranges are checked by the bench's loader.
        from bench.plan import load_sequence

        declared = load_sequence(Path(sequence))[1].parameters
        for name in params:
            if name not in declared:
                raise LoadError(
                    f"-p {name}: {ref.id} has no parameter '{name}' (it has: {', '.join(declared) or 'none'})"
                )
    jobs = [client.make_job(ref, params, parse_pairs(require, "--require"), seed) for _ in range(count)]
    ids = asyncio.run(
        client.submit(b, jobs, check=check, bench=bench, connect_timeout=connect_timeout, on_retry=_progress)
    )
    for i in ids:
        typer.echo(i)
    if wait and len(ids) == 1:
        _watch(b, ids[0], None, keys)


@lab_app.command()
def status(
    last: Annotated[int, typer.Option(help="show the last N finished jobs (every open job is shown)")] = 20,
    show_all: Annotated[bool, typer.Option("--all", help="show every job, finished or not")] = False,
    archive: Annotated[
        Path | None, typer.Option(help="also show the finished jobs of this archive file (bench lab archive)")
    ] = None,
    connect_timeout: Annotated[
        float, typer.Option(help="while the broker cannot be reached, keep trying this many seconds")
    ] = 0.0,
    broker: BrokerOpt = DEFAULT_BROKER,
    user: UserOpt = None,
    password: PasswordOpt = None,
    prefix: PrefixOpt = "lab",
    lab_keys: LabKeysOpt = None,
) -> None:
    """Benches (online, state, lease, progress) and jobs: every open one, the last finished ones."""
    from bench.lab import client, overview
    from bench.lab.archive import read_archive

    archived = read_archive(archive) if archive is not None else None
    b = _broker(broker, user, password, prefix)
    snap = asyncio.run(client.snapshot(b, keys=_keys(lab_keys), connect_timeout=connect_timeout, on_retry=_progress))
    for line in overview.bench_lines(snap):
        typer.echo(line)
    typer.echo("")
    for line in overview.job_table(snap, archived.jobs if archived else None, last=last, show_all=show_all):
        typer.echo(line)
    cap = client.broker_max_queued()
    if snap.retained * 2 >= cap:
        typer.echo(
            f"warning: {snap.retained} retained messages, more than half the {cap} the broker queues for one "
            "reader (max_queued_messages): archive finished jobs (bench lab archive)",
            err=True,
        )
    if archived is not None and archived.damaged:
        lines = ", ".join(map(str, archived.damaged[:5]))
        typer.echo(f"warning: {archive}: {len(archived.damaged)} damaged lines skipped (line {lines})", err=True)


@lab_app.command("archive")
def archive_cmd(
    to: Annotated[Path, typer.Option("--to", help="the archive file (JSON lines, appended)")],
    older_than: Annotated[
        str | None, typer.Option(help="only jobs submitted longer ago than this: 90s, 30m, 12h, 7d, 2w")
    ] = None,
    broker: BrokerOpt = DEFAULT_BROKER,
    user: UserOpt = None,
    password: PasswordOpt = None,
    prefix: PrefixOpt = "lab",
    lab_keys: LabKeysOpt = None,
) -> None:
    """Move finished jobs out of the broker: append them to a file (fsync), then clear their records."""
    from bench.lab.archive import archive, parse_duration

    age = parse_duration(older_than) if older_than is not None else None
    b = _broker(broker, user, password, prefix)
    done = asyncio.run(archive(b, to, older_than_s=age, keys=_keys(lab_keys)))
    typer.echo(
        f"archived {done.archived} finished jobs to {to}; on the broker: {done.kept_recent} finished "
        f"{'newer than ' + older_than if older_than else 'jobs'}, {done.open} open"
    )


def _progress(message: str) -> None:
    typer.echo(f"waiting: {message}", err=True)


def _quiet_transport() -> None:
    """The broker going away is the watcher's to tell (it waits and reconnects); paho's and asyncio's
    own words about the dead socket would only interleave with the run's lines."""
    for name in ("mqtt", "asyncio", "paho"):
        logging.getLogger(name).addHandler(logging.NullHandler())
        logging.getLogger(name).propagate = False


def _watch(b: Broker, job: str, timeout: float | None, keys: dict[str, str] | None) -> None:
    from bench.lab import client
    from bench.lab.protocol import Claim, Event, Result, State

    shown: list[tuple[str | None, str] | None] = [None]
    runs: dict[str, str] = {}  # run id -> its label: a job that runs twice shows two runs

    def label(run_id: str, bench: str) -> str:
        if run_id not in runs:
            runs[run_id] = f"run {len(runs) + 1}"
            typer.echo(f"{runs[run_id]}: {run_id} on bench {bench}")
        return runs[run_id]

    def show(kind: str, obj: Any) -> None:
        if kind == "claim" and isinstance(obj, Claim):
            typer.echo(f"taken by {obj.bench} (attempt {obj.attempt})")
        elif kind == "state" and isinstance(obj, State) and obj.step and (obj.run_id, obj.step) != shown[0]:
            shown[0] = (obj.run_id, obj.step)  # progress: one line per step of the method
            run = label(obj.run_id, obj.bench) if obj.run_id else "run ?"
            typer.echo(f"  {run} [{obj.steps_done + 1}/{obj.steps_total}] {obj.step}")
        elif kind == "event" and isinstance(obj, Event):
            if obj.kind in (
                "step_ended",
                "measurement",
                "run_started",
                "run_ended",
                "monitor_tripped",
                "supervisor_tripped",
                "emergency_stop",
            ):
                f = obj.fields
                detail = {
                    "step_ended": f"{f.get('step')}: {f.get('outcome')} {f.get('message', '')}",
                    "measurement": f"{f.get('name')} = {f.get('value')} {f.get('unit', '')} {f.get('outcome')}",
                    "run_started": f"run {obj.run_id}",
                    "run_ended": f"{f.get('verdict')} {f.get('reason', '')}",
                }.get(obj.kind, str(f.get("reason", "")))
                typer.echo(f"  {label(obj.run_id, obj.bench)} #{obj.seq:<5d} {obj.t:10.3f} s  {obj.kind}: {detail}")
        elif kind == "ignored" and isinstance(obj, Result):
            typer.echo(f"ignored: the {obj.verdict} of bench {obj.bench} does not count: {obj.reason}")
        elif kind == "result" and isinstance(obj, Result):
            typer.echo(f"{obj.verdict} {obj.reason}")
            typer.echo(
                f"bench {obj.bench}, run {obj.run_id}, report {obj.report}, manifest sha256 {obj.manifest_sha256}"
            )

    _quiet_transport()
    res = asyncio.run(client.watch(b, job, show, give_up_after=timeout, keys=keys))
    raise typer.Exit(res.exit_code if res.verdict != "REFUSED" else 2)


@lab_app.command()
def watch(
    job: Annotated[str, typer.Argument(help="job id (as printed by bench lab submit)")],
    timeout: Annotated[float | None, typer.Option(help="give up after this many seconds")] = None,
    broker: BrokerOpt = DEFAULT_BROKER,
    user: UserOpt = None,
    password: PasswordOpt = None,
    prefix: PrefixOpt = "lab",
    lab_keys: LabKeysOpt = None,
) -> None:
    """Follow a job live: who took it, step progress, events, and its verdict (exit code as bench run)."""
    _watch(_broker(broker, user, password, prefix), job, timeout, _keys(lab_keys))


def _control(
    op: str,
    bench: str,
    holder: str | None,
    reason: str,
    ttl: float,
    b: Broker,
    job: str | None = None,
    run_id: str | None = None,
) -> None:
    from bench.lab import client

    ctl = client.make_control(op, holder or client.who(), reason=reason, ttl_s=ttl, job=job, run_id=run_id)
    asyncio.run(client.control(b, bench, ctl))
    target = f" for job {job}" if job else f" for run {run_id}" if run_id else ""
    typer.echo(f"{op} sent to {bench}{target}")


def _running_job(b: Broker, bench: str) -> str:
    """The job a bench runs now, from its retained state: a stop names what it stops."""
    from bench.lab import client

    snap = asyncio.run(client.snapshot(b, history=False))
    st = snap.benches.get(bench, None)
    state = st.state if st is not None else None
    if state is None or state.state != "running" or not state.job:
        now = state.state if state is not None else "unknown (no such bench?)"
        raise LoadError(f"bench {bench} runs no job (state: {now}); name one with --job")
    return state.job


@lab_app.command()
def lease(
    bench: Annotated[str, typer.Argument(help="bench id")],
    holder: Annotated[str | None, typer.Option(help="lease holder [default: $BENCH_OPERATOR or $USER]")] = None,
    ttl: Annotated[float, typer.Option(help="seconds the lease lasts unless renewed")] = 30.0,
    keep: Annotated[bool, typer.Option("--keep", help="renew every ttl/3 until Ctrl-C, then release")] = False,
    release: Annotated[bool, typer.Option("--release", help="give the lease back")] = False,
    broker: BrokerOpt = DEFAULT_BROKER,
    user: UserOpt = None,
    password: PasswordOpt = None,
    prefix: PrefixOpt = "lab",
) -> None:
    """Take (or renew, or release) the lease a bench's remote control needs; it expires unless renewed."""
    b = _broker(broker, user, password, prefix)
    if release:
        _control("release", bench, holder, "", ttl, b)
        return
    _control("acquire", bench, holder, "", ttl, b)
    if keep:
        from bench.lab import client

        async def keepalive() -> None:
            who = holder or client.who()
            try:
                while True:
                    await asyncio.sleep(ttl / 3)
                    await client.control(b, bench, client.make_control("renew", who, ttl_s=ttl))
            finally:
                await client.control(b, bench, client.make_control("release", who, ttl_s=ttl))

        try:
            asyncio.run(keepalive())
        except KeyboardInterrupt:
            typer.echo("lease released")


def _stop_cmd(op: str):  # type: ignore[no-untyped-def]
    def cmd(
        bench: Annotated[str, typer.Argument(help="bench id")],
        reason: Annotated[str, typer.Option(help="why (recorded in the run)")] = "",
        holder: Annotated[str | None, typer.Option(help="lease holder [default: $BENCH_OPERATOR or $USER]")] = None,
        job: Annotated[str | None, typer.Option(help="the job to stop [default: the one the bench runs now]")] = None,
        run: Annotated[str | None, typer.Option(help="the run to stop (instead of --job)")] = None,
        broker: BrokerOpt = DEFAULT_BROKER,
        user: UserOpt = None,
        password: PasswordOpt = None,
        prefix: PrefixOpt = "lab",
    ) -> None:
        b = _broker(broker, user, password, prefix)
        if job is None and run is None:
            job = _running_job(b, bench)
        _control(op, bench, holder, reason, 30.0, b, job=job, run_id=run)

    return cmd


lab_app.command("terminate", help="Finish the current step, clean up, report (needs your lease).")(
    _stop_cmd("terminate")
)
lab_app.command("abort", help="Stop the steps now, clean up, report (needs your lease).")(_stop_cmd("abort"))
lab_app.command("estop", help="Emergency stop: every device to its safe state at once (no lease needed).")(
    _stop_cmd("estop")
)


def register(app: typer.Typer) -> None:
    app.command("agent")(agent)
    app.add_typer(lab_app, name="lab")
