"""The console's pages and its two event streams, as one Starlette app rendered with Jinja2 (autoescaped)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from a2amesh.observability import ServiceMetrics, health_routes
from a2amesh.settings import ConsoleSettings
from mesh_console import views
from mesh_console.mesh import Mesh, MeshError, Unauthorized, user_message
from mesh_console.security import KEY_COOKIE, SecurityHeaders, same_origin

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024
MAX_SEND_BYTES = 1_000_000
PAGE_SIZE = 20
LIVE_BACKLOG = timedelta(seconds=60)
"""How far back the Live page starts, so it opens on the latest events rather than empty."""
MAX_LIVE_SEEN = 5_000
ANSWER_FOLLOW_POLLS = 40
"""Quarter seconds an answer waits for the task store to record the task's next status."""


def _templates() -> Jinja2Templates:
    # autoescape on every template: whatever an agent wrote is shown as text, never as markup
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    templates = Jinja2Templates(env=env)
    env.filters["state"] = views.short_state
    env.filters["message_text"] = views.message_text
    env.filters["pool"] = views.pool_of
    env.globals["STATES"] = views.STATES
    return templates


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (bounded), first value of each field."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise MeshError("form too large", 413)
    return {name: values[0] for name, values in parse_qs(body.decode("utf-8", "replace")).items()}


def create_app(settings: ConsoleSettings, stop: asyncio.Event | None = None, mesh: Mesh | None = None) -> Starlette:
    """The console over `mesh` (built from `settings` when not given); `stop` ends open event streams."""
    mesh = mesh or Mesh(settings)
    stop = stop or asyncio.Event()
    templates = _templates()

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, {"page": name.split(".")[0], **context}, status_code=status)

    def error_page(request: Request, error: MeshError) -> Response:
        return render(request, "error.html", status=error.status, message=str(error))

    async def person_key(request: Request) -> str | None:
        """The key of the cookie if the coordinator takes it, else None."""
        key = request.cookies.get(KEY_COOKIE)
        if not key:
            return None
        return key if await mesh.key_accepted(key) else None

    def to_login(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
        response.delete_cookie(KEY_COOKIE)
        return response

    def page(handler: Any) -> Any:
        """A page for people who gave an accepted key; others go to /login. Mesh errors become an error page."""

        async def wrapped(request: Request) -> Response:
            try:
                key = await person_key(request)
                if key is None:
                    if request.url.path.startswith("/api/"):
                        return JSONResponse({"error": "give the coordinator's API key first"}, status_code=401)
                    return to_login(request)
                if request.method == "POST" and not same_origin(request):
                    return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
                return await handler(request, key)
            except Unauthorized:
                return to_login(request)
            except MeshError as error:
                if request.url.path.startswith("/api/"):
                    return JSONResponse({"error": str(error)}, status_code=error.status)
                return error_page(request, error)

        return wrapped

    # -- sign in / out ---------------------------------------------------------------------------------------
    async def login_form(request: Request) -> Response:
        return render(request, "login.html", next=request.query_params.get("next", "/agents"), error="")

    async def login(request: Request) -> Response:
        if not same_origin(request):
            return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
        form = await _form(request)
        key = form.get("key", "").strip()
        target = form.get("next", "/agents")
        if not target.startswith("/") or target.startswith("//"):
            target = "/agents"
        try:
            accepted = bool(key) and await mesh.key_accepted(key)
        except MeshError as error:
            return render(request, "login.html", status=502, next=target, error=str(error))
        if not accepted:
            return render(request, "login.html", status=401, next=target, error="the coordinator refused this key")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict", secure=settings.secure_cookie, path="/")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(KEY_COOKIE)
        return response

    async def home(request: Request) -> Response:
        return RedirectResponse("/agents", status_code=303)

    # -- agents ----------------------------------------------------------------------------------------------
    async def agents(request: Request, key: str) -> Response:
        records = await mesh.agents()
        name = "_agents_table.html" if request.query_params.get("fragment") else "agents.html"
        online = sum(1 for record in records if record.get("status") == "online")
        return render(request, name, agents=records, online=online, coordinator=mesh.public_coordinator)

    # -- tasks -----------------------------------------------------------------------------------------------
    async def tasks(request: Request, key: str) -> Response:
        query = request.query_params
        filters = {name: query.get(name, "") for name in ("state", "skill", "agent", "context", "since")}
        params = {
            "pageSize": str(PAGE_SIZE),
            "status": filters["state"],
            "contextId": filters["context"],
            "pageToken": query.get("pageToken", ""),
        }
        if filters["since"]:
            params["statusTimestampAfter"] = filters["since"]
        listing, records = await asyncio.gather(mesh.tasks(key, params), mesh.agents())
        rows = listing.get("tasks", [])
        holders = await mesh.agents_of([task["id"] for task in rows])
        # the store keeps no skill per task: a skill filter keeps the tasks held by agents offering it
        skilled = {r["address"] for r in records if filters["skill"] in r.get("skills", [])}
        shown = [
            {"task": task, "agent": holders.get(task["id"], "")}
            for task in rows
            if (not filters["agent"] or holders.get(task["id"], "") == filters["agent"])
            and (not filters["skill"] or holders.get(task["id"], "") in skilled)
        ]
        skills = sorted({skill for record in records for skill in record.get("skills", [])})
        next_token = listing.get("nextPageToken") or ""
        next_link = "?" + urlencode({**{k: v for k, v in filters.items() if v}, "pageToken": next_token})
        return render(
            request,
            "tasks.html",
            rows=shown,
            filters=filters,
            skills=skills,
            agents=sorted(r["address"] for r in records),
            total=listing.get("totalSize"),
            next_link=next_link if next_token else "",
        )

    async def task_page(request: Request, key: str) -> Response:
        task_id = request.path_params["task_id"]
        task = await mesh.get_task(key, task_id)  # the owner check: the event log is read only once this passed
        events = await mesh.recorded_events(task_id)
        named = views.child_ids(task)
        # steps of a workflow share its context and name it as their parent (named in artifacts once they end)
        context_tasks = await mesh.tasks(key, {"contextId": task.get("contextId", ""), "pageSize": "100"})
        children = [t for t in context_tasks.get("tasks", []) if views.parent_of(t) == task_id or t["id"] in named]
        children.sort(key=lambda t: t["status"].get("timestamp", ""))
        child_rows = [
            {"task": child, "step": views.step_of(child), "text": views.message_text(child["status"].get("message"))}
            for child in children
        ]
        artifacts = [
            {"artifact": artifact, "parts": views.artifact_downloads(task_id, artifact)}
            for artifact in task.get("artifacts") or []
        ]
        messages = [
            {"message": message, "parts": [views.part_view(part) for part in message.get("parts", [])]}
            for message in task.get("history") or []
        ]
        state = task["status"].get("state", "")
        return render(
            request,
            "task.html",
            task=task,
            agent=events.get("agent") or "",
            state=state,
            terminal=state in views.TERMINAL_STATES,
            waiting=state in ("TASK_STATE_INPUT_REQUIRED", "TASK_STATE_AUTH_REQUIRED"),
            question=views.message_text(task["status"].get("message")),
            timeline=views.timeline(events.get("statusHistory", [])),
            messages=messages,
            artifacts=artifacts,
            children=child_rows,
            parent=views.parent_of(task),
            notice=request.query_params.get("notice", ""),
        )

    async def cancel(request: Request, key: str) -> Response:
        task_id = request.path_params["task_id"]
        try:
            await mesh.cancel(key, task_id)
            notice = "cancel requested"
        except Unauthorized:
            raise
        except MeshError as error:
            notice = f"cancel refused: {error}"
        return RedirectResponse(f"/tasks/{task_id}?{urlencode({'notice': notice})}", status_code=303)

    async def answer(request: Request, key: str) -> Response:
        task_id = request.path_params["task_id"]
        text = (await _form(request)).get("text", "").strip()
        if not text:
            notice = "write an answer first"
        else:
            task = await mesh.get_task(key, task_id)
            try:
                await mesh.reply(key, task, text)
                notice = "answer sent"
                await wait_for_news(key, task_id, task["status"].get("timestamp", ""))
            except Unauthorized:
                raise
            except MeshError as error:
                notice = f"answer refused: {error}"
        return RedirectResponse(f"/tasks/{task_id}?{urlencode({'notice': notice})}", status_code=303)

    async def wait_for_news(key: str, task_id: str, since: str) -> None:
        """Give the task store a moment to record what an answer started, so the page shown next is not the
        question again (bounded: the page follows the task by itself once it shows it running)."""
        for _ in range(ANSWER_FOLLOW_POLLS):
            await asyncio.sleep(0.25)
            with suppress(MeshError):
                if (await mesh.get_task(key, task_id))["status"].get("timestamp", "") != since:
                    return

    async def part_download(request: Request, key: str) -> Response:
        """A file part's inline bytes, always as an attachment (never rendered in the console's origin)."""
        params = request.path_params
        task = await mesh.get_task(key, params["task_id"])
        for artifact in task.get("artifacts") or []:
            if artifact.get("artifactId") != params["artifact_id"]:
                continue
            parts = artifact.get("parts", [])
            index = int(params["index"])
            if index < len(parts) and "raw" in parts[index]:
                name = "".join(c for c in str(parts[index].get("filename") or "part.bin") if c.isalnum() or c in "._-")
                return Response(
                    views.decode_raw(parts[index]["raw"]),
                    media_type="application/octet-stream",
                    headers={"content-disposition": f'attachment; filename="{name or "part.bin"}"'},
                )
        raise MeshError("no such file part", 404)

    # -- send ------------------------------------------------------------------------------------------------
    async def send_page(request: Request, key: str) -> Response:
        records = await mesh.agents()
        skills = sorted({skill for record in records for skill in record.get("skills", [])})
        return render(request, "send.html", skills=skills, agents=sorted(r["address"] for r in records))

    async def send(request: Request, key: str) -> Response:
        """Start a task from the Send page and relay the coordinator's event stream (SSE) as it comes."""
        body = await request.body()
        if len(body) > MAX_SEND_BYTES:
            return JSONResponse({"error": f"message over {MAX_SEND_BYTES} bytes"}, status_code=413)
        try:
            request_body = send_request(json.loads(body or b"{}"))
        except (ValueError, TypeError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for event in mesh.stream(key, request_body):
                    yield b"data: " + event + b"\n\n"
            except MeshError as error:
                yield b"data: " + json.dumps({"error": str(error)}).encode() + b"\n\n"

        return StreamingResponse(relay(), media_type="text/event-stream")

    # -- live ------------------------------------------------------------------------------------------------
    async def live_page(request: Request, key: str) -> Response:
        records = await mesh.agents()
        return render(request, "live.html", agents=sorted(r["address"] for r in records))

    async def live(request: Request, key: str) -> Response:
        """Task events as the task store records them: it is polled (no broker identity), every task whose status
        changed since the last poll becomes one SSE event; `agent` keeps one agent's tasks only."""
        wanted = request.query_params.get("agent", "")

        async def events() -> AsyncIterator[bytes]:
            cursor = datetime.now(UTC) - LIVE_BACKLOG
            seen: set[tuple[str, str]] = set()
            holders: dict[str, str] = {}
            ends = time.monotonic() + settings.live_stream_seconds
            yield b"retry: 2000\n\n"
            while not stop.is_set() and time.monotonic() < ends and not await request.is_disconnected():
                try:
                    page = await mesh.tasks(
                        key, {"statusTimestampAfter": cursor.isoformat(), "pageSize": "50", "historyLength": "0"}
                    )
                except MeshError as error:
                    yield b"event: problem\ndata: " + json.dumps({"error": str(error)}).encode() + b"\n\n"
                    page = {"tasks": []}
                fresh = [t for t in page.get("tasks", []) if (t["id"], t["status"].get("timestamp", "")) not in seen]
                unknown = [t["id"] for t in fresh if t["id"] not in holders]
                holders.update(await mesh.agents_of(unknown) if unknown else {})
                for task in sorted(fresh, key=lambda t: t["status"].get("timestamp", "")):
                    stamp = task["status"].get("timestamp", "")
                    seen.add((task["id"], stamp))
                    moment = views.parse_time(stamp)
                    if moment and moment > cursor:
                        cursor = moment - timedelta(milliseconds=1)
                    agent = holders.get(task["id"], "")
                    if wanted and agent != wanted:
                        continue
                    event = {
                        "taskId": task["id"],
                        "contextId": task.get("contextId", ""),
                        "state": views.short_state(task["status"].get("state")),
                        "timestamp": stamp,
                        "agent": agent,
                        "text": views.message_text(task["status"].get("message"))[:300],
                    }
                    yield b"data: " + json.dumps(event).encode() + b"\n\n"
                if len(seen) > MAX_LIVE_SEEN:
                    seen.clear()
                if len(holders) > MAX_LIVE_SEEN:
                    holders.clear()
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=settings.live_poll_interval)

        return StreamingResponse(events(), media_type="text/event-stream")

    # -- health ----------------------------------------------------------------------------------------------
    async def healthz(request: Request) -> Response:
        """Ready when the registry and the task store answer (the coordinator is asked on each sign-in)."""
        checks = {}
        for name, url in (("registry", mesh.registry), ("taskstore", mesh.taskstore)):
            try:
                checks[name] = (await mesh.internal.get(f"{url}/livez", timeout=2.0)).status_code == 200
            except Exception:
                checks[name] = False
        ok = all(checks.values())
        body = {"status": "ok" if ok else "unavailable", **{k: "up" if v else "down" for k, v in checks.items()}}
        return JSONResponse(body, status_code=200 if ok else 503)

    routes = [
        Route("/", home),
        *health_routes(ServiceMetrics("console")),  # /livez, /metrics
        Route("/healthz", healthz),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/agents", page(agents)),
        Route("/tasks", page(tasks)),
        Route("/tasks/{task_id}", page(task_page)),
        Route("/tasks/{task_id}/cancel", page(cancel), methods=["POST"]),
        Route("/tasks/{task_id}/answer", page(answer), methods=["POST"]),
        Route("/tasks/{task_id}/artifacts/{artifact_id}/parts/{index:int}", page(part_download)),
        Route("/send", page(send_page)),
        Route("/api/send", page(send), methods=["POST"]),
        Route("/live", page(live_page)),
        Route("/api/live", page(live)),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        stop.set()  # end open event streams first, so the server's graceful shutdown does not wait on them
        await mesh.aclose()

    app = Starlette(routes=routes, lifespan=lifespan)
    return SecurityHeaders(app)  # type: ignore[return-value]


def send_request(form: dict[str, Any]) -> dict[str, Any]:
    """The SendMessageRequest of the Send page's fields: text, data (JSON), file (name, mediaType, base64 bytes),
    metadata (JSON object), and a skill or an agent to route to. ValueError names what is wrong."""
    if not isinstance(form, dict):
        raise ValueError("send a JSON object")
    parts: list[dict[str, Any]] = []
    if str(form.get("text") or "").strip():
        parts.append({"text": str(form["text"])})
    if str(form.get("data") or "").strip():
        try:
            parts.append({"data": json.loads(form["data"])})
        except json.JSONDecodeError as error:
            raise ValueError(f"data is not JSON: {error}") from None
    file = form.get("file")
    if isinstance(file, dict) and file.get("base64"):
        parts.append(
            {
                "raw": str(file["base64"]),
                "filename": str(file.get("name") or "file"),
                "mediaType": str(file.get("mediaType") or "application/octet-stream"),
            }
        )
    if not parts:
        raise ValueError("write a message: text, data or a file")
    metadata: dict[str, Any] = {}
    if str(form.get("metadata") or "").strip():
        try:
            metadata = json.loads(form["metadata"])
        except json.JSONDecodeError as error:
            raise ValueError(f"metadata is not JSON: {error}") from None
        if not isinstance(metadata, dict):
            raise ValueError("metadata must be a JSON object")
    if form.get("agent"):
        metadata["agent"] = str(form["agent"])
    elif form.get("skill"):
        metadata["skill"] = str(form["skill"])
    return {"message": user_message(parts), "metadata": metadata}
