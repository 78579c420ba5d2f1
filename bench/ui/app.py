"""The browser station's web application (Starlette, served by uvicorn: ``bench ui``).

The page (bench/ui/static/) is the project's own HTML, CSS and script, served by this app with
everything it needs, so the station works on a lab network without internet. The page reads
JSON from ``/api/...`` and one server-sent event stream (``/api/events``, bench/ui/live.py); it
acts through POSTs of JSON. The server answers a refusal with a catalogue key and its arguments
(bench/ui/i18n.py), and a bad field with one line next to it, never with a traceback.

Who may do what is bench/ui/accounts.py's ``allowed``; every action (and every refusal of one) is
written to the station's audit log (bench/ui/audit.py) with the user and the time. Sessions are
random tokens in an HttpOnly, SameSite=Strict cookie, kept in memory: a restart signs everybody
out. Watching needs no account.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bench.errors import BenchError
from bench.ui import accounts, i18n
from bench.ui.audit import AuditLog, audit_path
from bench.ui.control import Controller, Refused
from bench.ui.live import Hub, sample

log = logging.getLogger("bench.ui")

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "bench_session"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_BODY = 64 * 1024  # a form of the station is a few hundred bytes
# The page loads only what this app serves: nothing from the network, no inline script.
# A prompt's picture shown as a document of its own: a sandbox (an origin of its own) without
# scripts; an SVG keeps its inline style.
PICTURE_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@dataclass(frozen=True)
class User:
    name: str
    role: accounts.Role


class Station:
    """The state of one station's server: its files, the sessions, the hub and the run controller."""

    def __init__(self, station_path: Path, reports: Path, accounts_path: Path | None) -> None:
        from bench.station import load_station

        self.station_path = station_path.resolve()
        self.station = load_station(self.station_path)
        self.reports = reports.resolve()
        self.accounts_path = accounts_path
        self.accounts: dict[str, accounts.Account] = (
            accounts.load_accounts(accounts_path) if accounts_path is not None else {}
        )
        self.audit = AuditLog(audit_path(self.station.model.id))
        self.sessions: dict[str, User] = {}
        self.hub = Hub()
        self.controller = Controller(self.station_path, self.reports, self.hub)
        self._library: list[Any] | None = None
        self.sampler: asyncio.Task[None] | None = None
        self.stopping = False

    async def library(self, reload: bool = False) -> list[Any]:
        from bench.ui.catalog import library

        if self._library is None or reload:
            self._library = await asyncio.to_thread(library, self.station_path)
        return self._library or []

    async def entry(self, sequence_id: str) -> Any:
        for e in await self.library():
            if e.id == sequence_id:
                return e
        raise Refused("refused.unknown_sequence", status=404, id=sequence_id)

    def user(self, request: Request) -> User | None:
        token = request.cookies.get(COOKIE)
        return self.sessions.get(token) if token else None

    def record(self, user: User | None, action: str, **details: Any) -> None:
        """One line of the audit log; a log that cannot be written is said on the server's stderr."""
        try:
            self.audit.write(user.name if user else "(anonymous)", user.role if user else "watcher", action, **details)
        except BenchError as exc:
            log.error("audit log: %s", exc)

    def shutdown(self) -> None:
        """The server is stopping: abort a run going on, end every browser's stream."""
        self.stopping = True
        self.controller.abort_for_shutdown()
        self.hub.close()


def refused(key: str, status: int = 409, detail: str | None = None, **args: Any) -> JSONResponse:
    return JSONResponse({"error": key, "args": args, "detail": detail}, status_code=status)


def field_errors(fields: dict[str, str], key: str = "refused.fields") -> JSONResponse:
    return JSONResponse({"error": key, "args": {}, "fields": fields}, status_code=400)


async def body(request: Request) -> dict[str, Any]:
    """The JSON object of a POST; a body that is not one is refused with one line."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise Refused("refused.bad_request", status=413)
    try:
        import json

        data = json.loads(raw or b"{}")
    except ValueError:
        raise Refused("refused.bad_request", status=400) from None
    if not isinstance(data, dict):
        raise Refused("refused.bad_request", status=400)
    return data


def text_of(data: dict[str, Any], name: str, limit: int = 2000) -> str:
    value = data.get(name, "")
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise Refused("refused.bad_request", status=400)
    return str(value).strip()[:limit]


Handler = Callable[[Request], Awaitable[Response]]


def guarded(handler: Handler) -> Handler:
    """Refusals become their JSON answer; any other failure is one line in the page and the log."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as r:
            return refused(r.key, r.status, **r.args_)
        except BenchError as exc:
            return refused("refused.bench", 400, detail=str(exc))
        except Exception as exc:  # never a traceback in the page or the terminal: one line in each
            line = f"{type(exc).__name__}: {exc}"
            log.error("internal error in %s: %s (set BENCH_DEBUG=1 for details)", request.url.path, line)
            if os.environ.get("BENCH_DEBUG"):
                log.exception("details")
            return refused("refused.internal", 500, detail=line)

    return wrapped


def create_app(station_path: Path, reports: Path, accounts_path: Path | None = None) -> Starlette:
    st = Station(station_path, reports, accounts_path)

    def need(request: Request, action: str) -> User:
        user = st.user(request)
        if not accounts.allowed(user.role if user else None, action):
            st.record(user, "refused", what=action, why="role")
            raise Refused("refused.role" if user else "refused.sign_in", status=403, action=action)
        assert user is not None
        return user

    # -- the page ---------------------------------------------------------------------------
    async def index(request: Request) -> Response:
        lang = request.cookies.get("lang")
        if lang not in i18n.LANGUAGES:
            lang = i18n.negotiate(request.headers.get("accept-language"))
        page = (STATIC / "index.html").read_text(encoding="utf-8").replace('lang="en"', f'lang="{lang}"', 1)
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    async def catalogue(request: Request) -> Response:
        lang = request.path_params["lang"]
        if lang not in i18n.LANGUAGES:
            return refused("refused.unknown_language", 404, lang=lang)
        return JSONResponse(i18n.catalogue(lang))

    # -- sessions ---------------------------------------------------------------------------
    @guarded
    async def session(request: Request) -> Response:
        user = st.user(request)
        role = user.role if user else None
        return JSONResponse(
            {
                "user": user.name if user else None,
                "role": role,
                "allowed": {a: accounts.allowed(role, a) for a in sorted(accounts.ACTIONS)},
                "accounts": st.accounts_path is not None,
                "station": {"id": st.station.model.id, "title": st.station.model.title},
            }
        )

    @guarded
    async def login(request: Request) -> Response:
        data = await body(request)
        name, password = text_of(data, "name", 200), str(data.get("password", ""))[:1000]
        if st.accounts_path is not None:
            # Read again at each sign-in: `bench ui user add` works while the station is served.
            st.accounts = await asyncio.to_thread(accounts.load_accounts, st.accounts_path)
        account = st.accounts.get(name)
        ok = account is not None and await asyncio.to_thread(accounts.verify_password, password, account.password_hash)
        if not ok or account is None:
            st.record(None, "sign_in_failed", name=name)
            return field_errors({"password": "login.wrong"}, "refused.sign_in_failed")
        token = secrets.token_urlsafe(32)
        st.sessions[token] = User(account.name, account.role)
        st.record(st.sessions[token], "sign_in")
        response = JSONResponse({"user": account.name, "role": account.role})
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    @guarded
    async def logout(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        user = st.sessions.pop(token, None) if token else None
        if user is not None:
            st.record(user, "sign_out")
        response = JSONResponse({"user": None})
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- before a run -----------------------------------------------------------------------
    @guarded
    async def status(request: Request) -> Response:
        from bench.ui.status import station_status

        return JSONResponse(await asyncio.to_thread(station_status, st.station_path))

    @guarded
    async def library(request: Request) -> Response:
        entries = await st.library(reload=request.query_params.get("reload") == "1")
        return JSONResponse({"sequences": [entry_json(e) for e in entries]})

    async def checked_parameters(user: User, entry: Any, data: dict[str, Any]) -> dict[str, str]:
        """The parameters the browser sent that differ from the defaults, checked; Refused otherwise."""
        from bench.ui.catalog import check_parameters

        sent = data.get("params") or {}
        if not isinstance(sent, dict):
            raise Refused("refused.bad_request", status=400)
        defaults = {p.name: p.default for p in entry.parameters}
        changed = {str(k): str(v).strip() for k, v in sent.items() if str(v).strip() != defaults.get(str(k))}
        if changed and not accounts.allowed(user.role, "change_parameters"):
            st.record(user, "refused", what="change_parameters", why="role", sequence=entry.id)
            raise Refused("refused.parameters_role", status=403)
        problems = await asyncio.to_thread(check_parameters, entry, st.station_path, changed) if changed else {}
        if problems:
            raise FieldProblems(problems)
        return changed

    @guarded
    async def check(request: Request) -> Response:
        """The form's fields checked as Start would check them (nothing is started)."""
        from bench.ui.catalog import check_parameters, check_serial

        data = await body(request)
        entry = await st.entry(text_of(data, "sequence", 200))
        fields: dict[str, str] = {}
        sent = data.get("params") or {}
        if isinstance(sent, dict):
            defaults = {p.name: p.default for p in entry.parameters}
            changed = {str(k): str(v).strip() for k, v in sent.items() if str(v).strip() != defaults.get(str(k))}
            if changed:
                fields.update(await asyncio.to_thread(check_parameters, entry, st.station_path, changed))
        if "serial" in data:
            problem = check_serial(st.station_path, text_of(data, "serial", 200))
            if problem is not None:
                fields["serial"] = problem
        return JSONResponse({"fields": fields})

    @guarded
    async def start(request: Request) -> Response:
        from bench.plan import build_plan
        from bench.runner import new_run_id
        from bench.ui.catalog import check_serial

        user = need(request, "start")
        if st.stopping:
            raise Refused("refused.stopping", status=503)
        data = await body(request)
        if st.controller.busy:
            assert st.controller.view is not None
            st.record(user, "refused", what="start", why="busy", owner=st.controller.view.owner)
            raise Refused("refused.busy", owner=st.controller.view.owner)
        entry = await st.entry(text_of(data, "sequence", 200))
        if entry.runnable is not None:
            raise Refused("refused.not_runnable", detail=entry.runnable)
        serial = text_of(data, "serial", 200)
        fields: dict[str, str] = {}
        params: dict[str, str] = {}
        try:
            params = await checked_parameters(user, entry, data)
        except FieldProblems as fp:
            fields.update(fp.fields)
        problem = check_serial(st.station_path, serial)
        if problem is not None:
            fields["serial"] = problem
        if fields:  # every field's problem at once, each next to its field
            return field_errors(fields)
        try:
            plan = await asyncio.to_thread(build_plan, entry.path, st.station_path, params, [])
        except BenchError as exc:
            st.record(user, "refused", what="start", why=str(exc), sequence=entry.id)
            return refused("refused.bench", 400, detail=str(exc))
        run_id = new_run_id()
        st.controller.start(plan, user.name, run_id, serial)  # Refused when another Start came first
        if st.controller.view is not None:
            st.controller.view.sequence["serial"] = serial
        st.record(user, "start", sequence=entry.id, version=entry.version, run_id=run_id, params=params, serial=serial)
        return JSONResponse({"run_id": run_id})

    # -- during a run -----------------------------------------------------------------------
    async def events(request: Request) -> Response:
        def snapshot() -> dict[str, Any]:
            return st.controller.snapshot()

        async def stream() -> AsyncIterator[str]:
            async for chunk in st.hub.stream(snapshot):
                yield chunk

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    @guarded
    async def stop(request: Request) -> Response:
        data = await body(request)
        level = text_of(data, "level", 20)
        if level == "estop":
            user = st.user(request)
            if not accounts.allowed(user.role if user else None, "estop"):
                st.record(user, "refused", what="estop", why="role")
                raise Refused("refused.sign_in" if user is None else "refused.role", status=403, action="estop")
            assert user is not None
            st.controller.stop("estop", user.name)  # pressed first, written down after
            st.record(user, "estop", run_id=st.controller.view.run_id if st.controller.view else None)
            return JSONResponse({"ok": True})
        user = need(request, "stop")
        view = st.controller.view
        if view is not None and st.controller.busy and view.owner != user.name and user.role != "engineer":
            st.record(user, "refused", what=level, why="not the controlling session", owner=view.owner)
            raise Refused("refused.not_owner", status=403, owner=view.owner)
        st.controller.stop(level, user.name)
        st.record(user, level, run_id=view.run_id if view else None)
        return JSONResponse({"ok": True})

    @guarded
    async def answer(request: Request) -> Response:
        user = need(request, "start")
        data = await body(request)
        view = st.controller.view
        if view is not None and view.owner != user.name and user.role != "engineer":
            raise Refused("refused.not_owner", status=403, owner=view.owner)
        try:
            prompt_id = int(data.get("id", 0))
        except (TypeError, ValueError):
            raise Refused("refused.bad_request", status=400) from None
        text = text_of(data, "answer")
        p = st.controller.prompt
        step = p.request.step if p is not None else None
        st.controller.answer(prompt_id, text, user.name)
        st.record(user, "answer_prompt", run_id=view.run_id if view else None, step=step, answer=text)
        return JSONResponse({"ok": True})

    @guarded
    async def picture(request: Request) -> Response:
        try:
            prompt_id = int(request.path_params["prompt"])
        except ValueError:
            raise Refused("refused.bad_request", status=400) from None
        path = st.controller.picture(prompt_id)
        if path is None or not path.is_file():
            raise Refused("refused.no_picture", status=404)
        # A picture comes with a supplier's sequence: an SVG opened on its own must not run a
        # script at the station's origin (it could press the station's buttons with the cookie).
        return FileResponse(path, headers={"Content-Security-Policy": PICTURE_CSP})

    # -- the station ------------------------------------------------------------------------
    @guarded
    async def reset_interlock(request: Request) -> Response:
        from bench.ui.status import reset_interlock as reset

        user = need(request, "reset_interlock")
        data = await body(request)
        reason = text_of(data, "reason", 500)
        if not reason:
            return field_errors({"reason": "interlock.reason_required"}, "refused.fields")
        if st.controller.busy:
            raise Refused("refused.busy_reset")
        outcome = await asyncio.to_thread(reset, st.station_path, reason, user.name)
        st.record(user, "reset_interlock", reason=reason, outcome=outcome)
        st.hub.publish("station", {"changed": "interlock"})
        return JSONResponse({"outcome": outcome})

    @guarded
    async def amend(request: Request) -> Response:
        """An amended report of a sealed run (ISO/IEC 17025 7.8.8), as ``bench report amend`` issues it."""
        from bench.record.verify import is_sealed
        from bench.report.amend import amend_report

        user = need(request, "amend_report")
        data = await body(request)
        run_id, reason = text_of(data, "run_id", 200), text_of(data, "reason", 1000)
        folder = (st.reports / run_id).resolve()
        if (
            not RUN_ID.fullmatch(run_id)
            or not folder.is_relative_to(st.reports)
            or not (folder / "result.json").is_file()
        ):
            raise Refused("refused.not_found", status=404)
        if not reason:
            return field_errors({"amend_reason": "amend.reason_required"})
        if not is_sealed(folder):
            raise Refused("refused.unsealed", run_id=run_id)
        out, report_id = await asyncio.to_thread(amend_report, folder, reason=reason, by=user.name)
        st.record(user, "amend_report", run_id=run_id, report_id=report_id, reason=reason, folder=out.name)
        return JSONResponse({"report_id": report_id, "folder": out.name})

    @guarded
    async def history(request: Request) -> Response:
        from bench.ui.history import run_history

        run_id = request.query_params.get("run_id") or None
        serial = request.query_params.get("serial") or None
        data = await asyncio.to_thread(run_history, st.station_path, run_id, serial)
        return JSONResponse(data)

    @guarded
    async def audit(request: Request) -> Response:
        need(request, "reset_interlock")  # the engineers read the log
        return JSONResponse({"entries": await asyncio.to_thread(st.audit.tail, 50)})

    @guarded
    async def lab(request: Request) -> Response:
        from bench.ui.labview import lab_benches

        return JSONResponse({"benches": await lab_benches()})

    @guarded
    async def lab_submit(request: Request) -> Response:
        from bench.ui.labview import submit_to_lab

        user = need(request, "start")
        data = await body(request)
        entry = await st.entry(text_of(data, "sequence", 200))
        try:
            params = await checked_parameters(user, entry, data)
        except FieldProblems as fp:
            return field_errors(fp.fields)
        target = text_of(data, "bench", 200) or None
        job = await submit_to_lab(entry, params, target, user.name)
        st.record(user, "lab_submit", sequence=entry.id, bench=target, job=job, params=params)
        return JSONResponse({"job": job})

    # -- the record, read-only --------------------------------------------------------------
    async def run_file(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        rel = request.path_params.get("path", "")
        if not RUN_ID.fullmatch(run_id):
            return refused("refused.not_found", 404)
        folder = (st.reports / run_id).resolve()
        target = (folder / rel).resolve()
        if not target.is_relative_to(folder) or not target.exists():
            return refused("refused.not_found", 404)
        if target.is_dir():
            return HTMLResponse(listing(run_id, folder, target), headers={"Content-Security-Policy": CSP})
        headers = {"Content-Security-Policy": "default-src 'self' 'unsafe-inline' data:; frame-ancestors 'self'"}
        return FileResponse(target, headers=headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        st.sampler = asyncio.get_running_loop().create_task(sample(st.hub, st.controller.run), name="ui-sampler")
        try:
            yield
        finally:
            st.shutdown()
            await st.controller.wait()  # the run reaches its safe state and its record is sealed
            st.sampler.cancel()

    routes = [
        Route("/", index),
        Route("/i18n/{lang}.json", catalogue),
        Route("/api/session", session),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/logout", logout, methods=["POST"]),
        Route("/api/status", status),
        Route("/api/library", library),
        Route("/api/check", check, methods=["POST"]),
        Route("/api/start", start, methods=["POST"]),
        Route("/api/stop", stop, methods=["POST"]),
        Route("/api/prompt", answer, methods=["POST"]),
        Route("/api/prompt/{prompt}/picture", picture),
        Route("/api/interlock/reset", reset_interlock, methods=["POST"]),
        Route("/api/amend", amend, methods=["POST"]),
        Route("/api/history", history),
        Route("/api/audit", audit),
        Route("/api/lab", lab),
        Route("/api/lab/submit", lab_submit, methods=["POST"]),
        Route("/api/events", events),
        Route("/runs/{run_id}/", run_file),
        Route("/runs/{run_id}/{path:path}", run_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.station = st
    return app


class FieldProblems(Exception):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(", ".join(fields))
        self.fields = fields


def entry_json(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "title": e.title,
        "version": e.version,
        "standard": e.standard,
        "clause": e.clause,
        "requires": list(e.requires),
        "prompts": e.prompts,
        "runnable": e.runnable,
        "parameters": [
            {
                "name": p.name,
                "default": p.default,
                "unit": p.unit,
                "minimum": p.minimum,
                "maximum": p.maximum,
                "doc": p.doc,
                "origin": p.origin,
            }
            for p in e.parameters
        ],
    }


def listing(run_id: str, folder: Path, target: Path) -> str:
    """A plain index of one folder of a run (read-only)."""
    rel = target.relative_to(folder)
    rows = []
    for p in sorted(target.iterdir()):
        name = p.name + ("/" if p.is_dir() else "")
        href = f"/runs/{run_id}/{(rel / p.name).as_posix()}" + ("/" if p.is_dir() else "")
        rows.append(f'<li><a href="{html.escape(href)}">{html.escape(name)}</a></li>')
    title = html.escape(f"{run_id}/{rel.as_posix() if str(rel) != '.' else ''}")
    return f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1><ul>{''.join(rows)}</ul>"
