"""Errors that reach a client: a status code, a machine-readable `code`, a message, the trace id."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logging import trace_id_var

TRACE_HEADER = "X-Trace-Id"


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what}_not_found", f"{what.replace('_', ' ')} not found")


def is_database_unavailable(exc: BaseException) -> bool:
    """The database connection broke or none could be had: retrying the request can succeed.

    An integrity or data error is the request's own fault and is not one of these.
    """
    if isinstance(exc, sa_exc.TimeoutError):  # pool exhausted
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return (
            exc.connection_invalidated
            or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
            or _refused_connection(exc)
        )
    return isinstance(exc, ConnectionError)


# SQLSTATEs of a server that refuses or drops connections: class 08 (connection exception),
# too_many_connections, and shutting down, crashed or starting up (57P01-57P03).
_UNAVAILABLE_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03"})
# object_not_in_prerequisite_state, as a connection attempt gets it from a database with
# ALLOW_CONNECTIONS false; raised by a statement, the same code is the statement's own fault.
_NOT_ACCEPTING_CONNECTIONS = "55000"


def _refused_connection(exc: sa_exc.DBAPIError) -> bool:
    """asyncpg's refusals reach SQLAlchemy as its generic DBAPI Error, neither operational nor
    invalidating: they are recognised by their SQLSTATE (and a connect has no statement)."""
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    if sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES:
        return True
    return sqlstate == _NOT_ACCEPTING_CONNECTIONS and exc.statement is None


def _body(request: Request, code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "trace_id": request.state.trace_id}
    if details is not None:
        body["details"] = details
    return body


class TraceMiddleware:
    """Gives each HTTP request a trace id (the client's `X-Trace-Id` or a new one) in
    `request.state.trace_id` and `trace_id_var`, and answers with it in `X-Trace-Id`.

    Pure ASGI rather than `@app.middleware("http")`: that one runs the route in a task of its own
    and streams the response through a queue, a cost paid on every request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The dict behind `request.state`: routes may replace the trace id in it (checkout uses
        # its checkout id), so the header is read from it when the response starts.
        state = scope.setdefault("state", {})
        state["trace_id"] = Headers(scope=scope).get(TRACE_HEADER) or uuid.uuid4().hex

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=list(message.get("headers", ())))
                headers[TRACE_HEADER] = state["trace_id"]
                message = {**message, "headers": headers.raw}
            await send(message)

        token = trace_id_var.set(state["trace_id"])
        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            trace_id_var.reset(token)


def install(app: FastAPI) -> None:
    app.add_middleware(TraceMiddleware)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            _body(request, exc.code, exc.message, exc.details),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(sa_exc.SQLAlchemyError)
    @app.exception_handler(ConnectionError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # A killed backend or a restarting server is transient: tell the client to retry (every
        # mutating call is idempotent by key or by nature) instead of answering a bare 500.
        if not is_database_unavailable(exc):
            raise exc
        return JSONResponse(
            _body(request, "database_unavailable", "the database is unavailable; retry shortly"),
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse(
            _body(request, "validation_error", "the request is not valid", details),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(_body(request, code, str(exc.detail)), status_code=exc.status_code)
