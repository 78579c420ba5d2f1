"""``bench agent`` and ``bench lab ...``: a lab of benches on one MQTT broker (docs/lab.md).

Registered on the main app by ``bench/cli.py``. aiomqtt is imported inside the commands, so
``bench run`` and ``bench --help`` never need a broker or its client.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast, get_type_hints

import typer

from bench.cli_args import parse_pairs
from bench.errors import LoadError
from bench.events import EventKind

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


_BROKER_OPTIONS = (
    inspect.Parameter("broker", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_BROKER, annotation=BrokerOpt),
    inspect.Parameter("user", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=UserOpt),
    inspect.Parameter("password", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=PasswordOpt),
    inspect.Parameter("prefix", inspect.Parameter.KEYWORD_ONLY, default="lab", annotation=PrefixOpt),
)
_KEYS_OPTION = inspect.Parameter("lab_keys", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=LabKeysOpt)

F = TypeVar("F", bound=Callable[..., None])


def broker_options(*, keys: bool = False) -> Callable[[F], F]:
    """Give a command the options every lab command has: ``--broker``, ``--user``, ``--password``,
    ``--prefix`` (and with ``keys`` ``--lab-keys``). The command takes the broker they name as
    ``b: Broker`` (and the lab's keys as ``keys``); typer sees the options, written once here."""

    def wrap(command: F) -> F:
        # Broker is imported only for the type checker (it would import aiomqtt): `b` is not typer's.
        hints = get_type_hints(command, localns={"Broker": object}, include_extras=True)
        own = [
            p.replace(annotation=hints[p.name])
            for p in inspect.signature(command).parameters.values()
            if p.name not in ("b", "keys")
        ]
        added = [*_BROKER_OPTIONS, *((_KEYS_OPTION,) if keys else ())]

        @functools.wraps(command)
        def with_broker(**kwargs: Any) -> None:
            b = _broker(kwargs.pop("broker"), kwargs.pop("user"), kwargs.pop("password"), kwargs.pop("prefix"))
            if keys:
                kwargs["keys"] = _keys(kwargs.pop("lab_keys"))
            command(b=b, **kwargs)

        del with_broker.__wrapped__  # typer reads the signature below, not the command's own
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
        with_broker.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        with_broker.__annotations__ = {p.name: p.annotation for p in params}
        return cast(F, with_broker)

    return wrap


@broker_options(keys=True)
def agent(
    b: Broker,
    keys: dict[str, str] | None,
    station: Annotated[Path, typer.Option(help="station file of this bench")],
    name: Annotated[str | None, typer.Option("--id", help="bench id [default: the station id]")] = None,
    library: Annotated[
        list[Path] | None, typer.Option(help="more sequence folders offered (besides the station's lab.library)")
    ] = None,
    reports: Annotated[Path, typer.Option(help="where run folders are written")] = Path("reports"),
    requeue_grace: Annotated[
        float, typer.Option(help="seconds a bench must stay offline before its job is taken again")
    ] = 3.0,
) -> None:
    """Put this bench online: take matching jobs from the lab's queue and stream their events."""
    import logging

    from bench.lab.agent import Agent, run_agent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("mqtt").setLevel(logging.WARNING)
    a = Agent(
        station,
        b,
        bench_id=name,
        library=library,
        reports=reports,
        requeue_grace=requeue_grace,
        lab_keys=keys,
    )
    if not a.library:
        raise LoadError("no sequences to offer: set lab.library in the station file or give --library")
    run_agent(a)


@lab_app.command()
@broker_options(keys=True)
def submit(
    b: Broker,
    keys: dict[str, str] | None,
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
) -> None:
    """Queue a job; an idle bench whose capabilities match takes it."""
    import asyncio

    from bench.lab import client

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
@broker_options(keys=True)
def status(
    b: Broker,
    keys: dict[str, str] | None,
    last: Annotated[int, typer.Option(help="show the last N finished jobs (every open job is shown)")] = 20,
    show_all: Annotated[bool, typer.Option("--all", help="show every job, finished or not")] = False,
    archive: Annotated[
        Path | None, typer.Option(help="also show the finished jobs of this archive file (bench lab archive)")
    ] = None,
    connect_timeout: Annotated[
        float, typer.Option(help="while the broker cannot be reached, keep trying this many seconds")
    ] = 0.0,
) -> None:
    """Benches (online, state, lease, progress) and jobs: every open one, the last finished ones."""
    import asyncio

    from bench.lab import client, overview
    from bench.lab.archive import read_archive

    archived = read_archive(archive) if archive is not None else None
    snap = asyncio.run(client.snapshot(b, keys=keys, connect_timeout=connect_timeout, on_retry=_progress))
    for line in overview.bench_lines(snap, time.time()):
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
@broker_options(keys=True)
def archive_cmd(
    b: Broker,
    keys: dict[str, str] | None,
    to: Annotated[Path, typer.Option("--to", help="the archive file (JSON lines, appended)")],
    older_than: Annotated[
        str | None, typer.Option(help="only jobs submitted longer ago than this: 90 s, 30 min, 12 h, 7 d")
    ] = None,
) -> None:
    """Move finished jobs out of the broker: append them to a file (fsync), then clear their records."""
    import asyncio

    from bench.lab.archive import archive, parse_older_than

    age = parse_older_than(older_than) if older_than is not None else None
    done = asyncio.run(archive(b, to, older_than_s=age, keys=keys))
    typer.echo(
        f"archived {done.archived} finished jobs to {to}; on the broker: {done.kept_recent} finished "
        f"{'newer than ' + older_than if older_than else 'jobs'}, {done.open} open"
    )


def _progress(message: str) -> None:
    typer.echo(f"waiting: {message}", err=True)


def _quiet_transport() -> None:
    """The broker going away is the watcher's to tell (it waits and reconnects); paho's and asyncio's
    own words about the dead socket would only interleave with the run's lines."""
    import logging

    for name in ("mqtt", "asyncio", "paho"):
        logging.getLogger(name).addHandler(logging.NullHandler())
        logging.getLogger(name).propagate = False


# The events of a run that `bench lab watch` shows (the others are in the run's record).
WATCHED_EVENTS = frozenset(
    {
        EventKind.STEP_ENDED,
        EventKind.MEASUREMENT,
        EventKind.RUN_STARTED,
        EventKind.RUN_ENDED,
        EventKind.MONITOR_TRIPPED,
        EventKind.SUPERVISOR_TRIPPED,
        EventKind.EMERGENCY_STOP,
    }
)


def _watch(b: Broker, job: str, timeout: float | None, keys: dict[str, str] | None) -> None:
    import asyncio

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
        elif kind == "event" and isinstance(obj, Event) and obj.kind in WATCHED_EVENTS:
            f = obj.fields
            detail = {
                EventKind.STEP_ENDED: f"{f.get('step')}: {f.get('outcome')} {f.get('message', '')}",
                EventKind.MEASUREMENT: f"{f.get('name')} = {f.get('value')} {f.get('unit', '')} {f.get('outcome')}",
                EventKind.RUN_STARTED: f"run {obj.run_id}",
                EventKind.RUN_ENDED: f"{f.get('verdict')} {f.get('reason', '')}",
            }.get(EventKind(obj.kind), str(f.get("reason", "")))
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
@broker_options(keys=True)
def watch(
    b: Broker,
    keys: dict[str, str] | None,
    job: Annotated[str, typer.Argument(help="job id (as printed by bench lab submit)")],
    timeout: Annotated[float | None, typer.Option(help="give up after this many seconds")] = None,
) -> None:
    """Follow a job live: who took it, step progress, events, and its verdict (exit code as bench run)."""
    _watch(b, job, timeout, keys)


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
    import asyncio

    from bench.lab import client

    ctl = client.make_control(op, holder or client.who(), reason=reason, ttl_s=ttl, job=job, run_id=run_id)
    asyncio.run(client.control(b, bench, ctl))
    target = f" for job {job}" if job else f" for run {run_id}" if run_id else ""
    typer.echo(f"{op} sent to {bench}{target}")


def _running_job(b: Broker, bench: str) -> str:
    """The job a bench runs now, from its retained state: a stop names what it stops."""
    import asyncio

    from bench.lab import client

    snap = asyncio.run(client.snapshot(b, history=False))
    st = snap.benches.get(bench, None)
    state = st.state if st is not None else None
    if state is None or state.state != "running" or not state.job:
        now = state.state if state is not None else "unknown (no such bench?)"
        raise LoadError(f"bench {bench} runs no job (state: {now}); name one with --job")
    return state.job


@lab_app.command()
@broker_options()
def lease(
    b: Broker,
    bench: Annotated[str, typer.Argument(help="bench id")],
    holder: Annotated[str | None, typer.Option(help="lease holder [default: $BENCH_OPERATOR or $USER]")] = None,
    ttl: Annotated[float, typer.Option(help="seconds the lease lasts unless renewed")] = 30.0,
    keep: Annotated[bool, typer.Option("--keep", help="renew every ttl/3 until Ctrl-C, then release")] = False,
    release: Annotated[bool, typer.Option("--release", help="give the lease back")] = False,
) -> None:
    """Take (or renew, or release) the lease a bench's remote control needs; it expires unless renewed."""
    import asyncio

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
    @broker_options()
    def cmd(
        b: Broker,
        bench: Annotated[str, typer.Argument(help="bench id")],
        reason: Annotated[str, typer.Option(help="why (recorded in the run)")] = "",
        holder: Annotated[str | None, typer.Option(help="lease holder [default: $BENCH_OPERATOR or $USER]")] = None,
        job: Annotated[str | None, typer.Option(help="the job to stop [default: the one the bench runs now]")] = None,
        run: Annotated[str | None, typer.Option(help="the run to stop (instead of --job)")] = None,
    ) -> None:
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
