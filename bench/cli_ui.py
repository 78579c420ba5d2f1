"""``bench ui``: the operator station in the browser (docs/ui.md), and ``bench ui user ...``.

Registered on the main app by ``bench/cli.py``. Starlette, uvicorn and the station's own modules
are imported inside the command, and the accounts commands (bench/ui/cli_users.py) only when
``bench ui user`` is asked for, so ``bench --help`` stays as light as before
(tests/test_lazy_imports.py).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from bench.cli_args import default_station
from bench.errors import LoadError

if TYPE_CHECKING:
    from bench.ui.app import Station


class _WithUsers(TyperGroup):
    """``bench ui`` with its ``user`` group loaded on demand."""

    # Any: typer's group takes the click it vendors, whose types are not click's own.
    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), "user"})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name == "user":
            from bench.ui.cli_users import users_app

            command = typer.main.get_command(users_app)
            command.name = "user"
            command.help = "Accounts of the browser station: add or change a user, list them."
            return command
        return super().get_command(ctx, cmd_name)


ui_app = typer.Typer(
    cls=_WithUsers,
    invoke_without_command=True,
    help="Serve the operator station in the browser (docs/ui.md); `bench ui user ...` manages its accounts.",
)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port); one line when it is not one."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise LoadError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080 (port 0: any free port)")
    return host, int(port)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use is one line, before anything else starts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LoadError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise LoadError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


@ui_app.callback()
def ui(
    ctx: typer.Context,
    station: Annotated[Path | None, typer.Option(help="station file [default: stations/sim.yaml]")] = None,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT to serve on [default: the station's ui.listen, 127.0.0.1:8080]")
    ] = None,
    accounts: Annotated[
        Path | None, typer.Option(help="accounts file [default: the station's ui.accounts; none: watch only]")
    ] = None,
    reports: Annotated[Path, typer.Option(help="where run folders are written")] = Path("reports"),
) -> None:
    """Serve the operator station in the browser; Ctrl-C stops it (a run going on is aborted first)."""
    if ctx.invoked_subcommand is not None:
        return
    serve(station or default_station(), listen, accounts, reports)


def serve(station_path: Path, listen: str | None, accounts: Path | None, reports: Path) -> None:
    import uvicorn

    from bench.station import load_station
    from bench.ui.accounts import accounts_path
    from bench.ui.app import create_app

    loaded = load_station(station_path)
    settings: Any = getattr(loaded.model, "ui", None)
    host, port = parse_listen(listen or (settings.listen if settings is not None else "127.0.0.1:8080"))
    accounts = accounts if accounts is not None else accounts_path(loaded)
    app = create_app(station_path, reports, accounts)
    st: Station = app.state.station
    sock = bind(host, port)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config, st)
    shown = f"[{host}]" if ":" in host else host
    who = f"accounts {accounts}" if accounts is not None else "no accounts file: watching only"
    print(
        f"browser station for '{loaded.model.id}' on http://{shown}:{sock.getsockname()[1]}/ ({who}); Ctrl-C stops it",
        flush=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if server.failed:
        raise LoadError("the browser station could not start (see the line above)")
    print("browser station stopped", flush=True)


class _Server:
    """uvicorn's server with the station's own stop: a signal aborts a run going on (cleanup and
    safe state still run, the record is sealed) and ends the browsers' streams; a second one is an
    emergency stop, as at the terminal."""

    def __init__(self, config: Any, st: Station) -> None:
        import uvicorn

        outer = self

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                outer.signals += 1
                loop = outer.loop
                if outer.signals == 1:
                    if loop is not None:
                        loop.call_soon_threadsafe(st.shutdown)
                    self.should_exit = True
                else:
                    if loop is not None:
                        loop.call_soon_threadsafe(_estop, st)
                    self.force_exit = True

            async def startup(self, sockets: Any = None) -> None:
                import asyncio

                outer.loop = asyncio.get_running_loop()
                await super().startup(sockets=sockets)
                if self.should_exit and not self.started:
                    outer.failed = True

        self.server = Server(config)
        self.signals = 0
        self.loop: Any = None
        self.failed = False

    def run(self, sockets: list[socket.socket]) -> None:
        self.server.run(sockets=sockets)


def _estop(st: Station) -> None:
    try:
        st.controller.stop("estop", "the station's operator (second stop signal)")
    except Exception as exc:  # no run left to stop
        print(f"warning: {exc}", file=sys.stderr)
