"""Llama Stack 0.7.3's HTTP error contract, mended where it breaks OpenAI's; installed once when our vector_io
provider loads (inside the server's create_app, before it registers its exception handlers and serves):

- an unknown vector store or file is a 404 naming it on every route. Upstream rewrites every not-found error under
  /v1/vector_stores into a 400, and its routing table raises a bare ValueError ("Vector_store 'x' not found", a 400)
  before any provider runs;
- a store the caller may not read is the same 404 (the routing table hides it), so its existence does not leak;
- no error response closes the keep-alive connection. Upstream registers its handler for Exception, which
  Starlette runs in ServerErrorMiddleware: that middleware answers, then re-raises, and uvicorn drops the connection
  (the client's next request on it failed with "connection reset by peer"). AnswerErrors, the innermost user
  middleware, answers such errors with the same handler and stops there;
- an upload (POST /v1/files) larger than the vector_io provider's max_file_mib is a 413 naming the limit, decided
  from its Content-Length before the body is read, or as soon as a body without one passes the limit (upstream
  reads any size into memory and onto disk);
- PostgreSQL down or restarting under a kv_postgres or sql_postgres store (files and responses metadata) is a 503
  naming PostgreSQL, not an anonymous 500 (or, for a refused connection, a 502 quoting only the address). The
  sql_postgres engine itself recovers: Llama Stack pings pooled connections before use (pool_pre_ping, on by
  default), so no restart is needed once PostgreSQL is back.

And two things several replicas (or workers) on one shared store need:
- listing vector stores reads the registry through: upstream lists from a per-process cache refreshed at most every
  5 s, so a store just created through another replica was missing from the list;
- providers start their background work (resumes, lease heartbeats) when the server's event loop starts, not at the
  first request to them: a replica that only answers health checks still takes over a dead replica's batches.
"""

import traceback
from collections.abc import Callable

import asyncpg
import httpx
import psycopg2
from fastapi import Request
from fastapi.responses import JSONResponse
from llama_stack.core.access_control.access_control import AccessDeniedError, is_action_allowed
from llama_stack.core.access_control.datatypes import Action
from llama_stack.core.exceptions.translation import translate_exception
from llama_stack.core.request_headers import get_authenticated_user
from llama_stack.core.routing_tables.common import CommonRoutingTableImpl
from llama_stack.core.server import server
from llama_stack.core.storage.sqlstore.sqlalchemy_sqlstore import SqlAlchemySqlStoreImpl
from llama_stack.core.store.registry import CachedDiskDistributionRegistry
from llama_stack_api import ResourceNotFoundError, VectorStoreNotFoundError
from llama_stack_api.common.errors import OpenAIErrorResponse
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import MetadataStoreUnavailableError

_installed = False
_serving_hooks: list[Callable[[], None]] = []


def register_serving_hook(hook: Callable[[], None]) -> None:
    """``hook`` runs in the server's event loop when it starts serving (and again on requests: keep it idempotent)."""
    _serving_hooks.append(hook)


def install(max_upload_bytes: int) -> None:
    global _installed
    if _installed:
        return
    _installed = True
    server.global_exception_handler = exception_handler
    CommonRoutingTableImpl.assert_action_allowed = assert_action_allowed
    CachedDiskDistributionRegistry._should_refresh_cache = lambda self: True
    build_middleware_stack = server.StackApp.build_middleware_stack

    def build_with_errors_answered(app: server.StackApp) -> ASGIApp:
        app.user_middleware.append(Middleware(LimitUploads, max_bytes=max_upload_bytes))
        app.user_middleware.append(Middleware(AnswerErrors))
        app.user_middleware.append(Middleware(StartBackgroundWork))
        return build_middleware_stack(app)

    server.StackApp.build_middleware_stack = build_with_errors_answered


class StartBackgroundWork:
    """Runs the serving hooks on the ASGI lifespan start-up (uvicorn's loop, before the first request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._started:
            self._started = True
            for hook in _serving_hooks:
                hook()
        await self.app(scope, receive, send)


class AnswerErrors:
    """Answers an exception no route handled with exception_handler, unless the response has begun (a stream
    cut short: the connection must close then)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:
            if started:
                raise
            response = await exception_handler(Request(scope), exc)
            await response(scope, receive, send)


class LimitUploads:
    """Refuses file uploads above `max_bytes` with a 413 without reading them whole."""

    # The multipart envelope around the file: boundaries, part headers, the purpose field.
    ENVELOPE_BYTES = 64 * 1024

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != "/v1/files":
            await self.app(scope, receive, send)
            return
        allowed = self.max_bytes + self.ENVELOPE_BYTES
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > allowed:
            await self._refuse(scope, receive, send, f"{int(declared) / 1024 / 1024:.1f} MiB")
            return
        received, refused = 0, False

        async def counting_receive() -> Message:
            # Past the limit: answer 413 here, then tell the app the client has gone, and drop what it sends.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > allowed:
                refused = True
                await self._refuse(scope, receive, send, f"over {received / 1024 / 1024:.1f} MiB")
                return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counting_receive, send_unless_refused)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        message = (
            f"The upload is {size}; this server accepts files of at most {self.max_bytes / 1024 / 1024:g} MiB "
            "(max_file_mib in the vector_io provider config): split it into smaller files"
        )
        content = OpenAIErrorResponse.from_message(message).to_dict()
        await JSONResponse(status_code=httpx.codes.REQUEST_ENTITY_TOO_LARGE, content=content)(scope, receive, send)


async def exception_handler(request: Request, exc: Exception) -> JSONResponse:
    postgres_error = postgres_unavailable(exc, f"serving {request.method} {request.url.path}")
    http_exc = translate_exception(postgres_error or exc)
    if http_exc.status_code >= httpx.codes.INTERNAL_SERVER_ERROR:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    return JSONResponse(
        status_code=http_exc.status_code, content=OpenAIErrorResponse.from_message(http_exc.detail).to_dict()
    )


async def assert_action_allowed(self: CommonRoutingTableImpl, action: Action, type: str, identifier: str) -> None:
    obj = await self.get_object_by_identifier(type, identifier)  # None too for an object the caller may not read
    if obj is None:
        raise not_found(type, identifier)
    user = get_authenticated_user()
    if not is_action_allowed(self.policy, action, obj, user):
        raise AccessDeniedError(action, obj, user)


def not_found(type: str, identifier: str) -> ResourceNotFoundError:
    if type == "vector_store":
        return VectorStoreNotFoundError(identifier)
    return ResourceNotFoundError(identifier, resource_type=type.replace("_", " ").capitalize())


# Connection failures of the two PostgreSQL drivers of Llama Stack (psycopg2: kv_postgres; asyncpg under
# SQLAlchemy: sql_postgres). OperatorInterventionError: the server shutting down, starting up, or cancelling.
POSTGRES_CONNECTION_ERRORS = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)
POSTGRES_DRIVERS = ("asyncpg", "psycopg2")


def postgres_unavailable(exc: BaseException, action: str) -> MetadataStoreUnavailableError | None:
    """The 503 for `exc` when it, or an exception it was raised from, is PostgreSQL's connection failing."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, MetadataStoreUnavailableError):
            return None  # ours already says which PostgreSQL and what failed
        if isinstance(cause, POSTGRES_CONNECTION_ERRORS) or (
            isinstance(cause, OSError) and raised_in(cause, POSTGRES_DRIVERS)  # a refused connect in asyncpg
        ):
            reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            return MetadataStoreUnavailableError(postgres_address(exc), action, reason)
        cause = cause.__cause__ or cause.__context__
    return None


def raised_in(exc: BaseException, packages: tuple[str, ...]) -> bool:
    return any(
        frame.f_globals.get("__name__", "").split(".")[0] in packages
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def postgres_address(exc: BaseException) -> str:
    """host:port of the sql_postgres store the failing call went through (from its traceback), else a general
    name: SQLAlchemy's errors do not carry the address."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        store = frame.f_locals.get("self")
        if isinstance(store, SqlAlchemySqlStoreImpl) and hasattr(store.config, "host"):
            return f"{store.config.host}:{store.config.port} (sql_postgres store)"
    return "the configured address (metadata store)"
