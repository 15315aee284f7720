"""A server panel simulator for the demo and the tests: creates "servers" on POST /servers,
idempotently per Idempotency-Key, refuses the plans it is told to fail, and refuses a plan
whose capacity is used up (so the k-th server of a line can fail while the others are built)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

FAIL_PLANS_ENV = "PANEL_SIM_FAIL_PLANS"
PLAN_CAPACITY_ENV = "PANEL_SIM_PLAN_CAPACITY"


class ServerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str
    line_no: int
    # Which server of the order line; a client that builds one server per line omits it.
    unit_no: int = 1
    plan: str
    user_id: str


@dataclass
class PanelState:
    """Everything the simulator holds; tests read the counters to see what the client did."""

    fail_plans: frozenset[str]
    # The next N POST /servers answer 503, to exercise the client's retries.
    unavailable_next: int = 0
    # Servers the panel can still build per plan (a plan not named is unlimited); past it the
    # plan is sold out, as a real panel out of capacity refuses a create.
    plan_capacity: dict[str, int] = field(default_factory=dict)
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    requests: int = 0
    requests_by_key: dict[str, int] = field(default_factory=dict)
    creations: int = 0


def fail_plans_from_env() -> frozenset[str]:
    raw = os.environ.get(FAIL_PLANS_ENV, "")
    return frozenset(p.strip() for p in raw.split(",") if p.strip())


def plan_capacity_from_env() -> dict[str, int]:
    """`plan=n,other=m`: how many servers of each named plan the panel can still build."""
    raw = os.environ.get(PLAN_CAPACITY_ENV, "")
    pairs = (p.split("=", 1) for p in raw.split(",") if "=" in p)
    return {plan.strip(): int(n) for plan, n in pairs}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def create_panel_app(
    fail_plans: Iterable[str] | None = None,
    *,
    unavailable_next: int = 0,
    plan_capacity: Mapping[str, int] | None = None,
) -> FastAPI:
    """`fail_plans` None reads PANEL_SIM_FAIL_PLANS (comma-separated plan ids), `plan_capacity`
    None reads PANEL_SIM_PLAN_CAPACITY (`plan=n,...`)."""
    state = PanelState(
        fail_plans=fail_plans_from_env() if fail_plans is None else frozenset(fail_plans),
        unavailable_next=unavailable_next,
        plan_capacity=plan_capacity_from_env() if plan_capacity is None else dict(plan_capacity),
    )
    app = FastAPI(title="server panel simulator")
    app.state.panel = state

    # Handlers never await between reading and writing the state, so one event loop is
    # enough to keep each request's check-then-create atomic.
    @app.post("/servers", status_code=201)
    async def create_server(
        server_in: ServerIn,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Any:
        state.requests += 1
        if idempotency_key:
            state.requests_by_key[idempotency_key] = (
                state.requests_by_key.get(idempotency_key, 0) + 1
            )
        if state.unavailable_next > 0:
            state.unavailable_next -= 1
            return _error(503, "unavailable", "the panel is busy, try again")
        if not idempotency_key:
            return _error(400, "idempotency_key_required", "send an Idempotency-Key header")
        request_json = server_in.model_dump_json()
        if idempotency_key in state.by_key:
            server, first_request = state.by_key[idempotency_key]
            if first_request != request_json:
                return _error(409, "idempotency_key_reused", "this key was used for another body")
            return JSONResponse(server, status_code=201)
        if server_in.plan in state.fail_plans:
            return _error(422, "plan_unavailable", f"plan {server_in.plan!r} cannot be created")
        if state.plan_capacity.get(server_in.plan, 1) < 1:
            return _error(422, "plan_sold_out", f"no capacity left for plan {server_in.plan!r}")
        if server_in.plan in state.plan_capacity:
            state.plan_capacity[server_in.plan] -= 1
        server = {
            "id": f"srv_{secrets.token_hex(8)}",
            "status": "active",
            "plan": server_in.plan,
            "order_id": server_in.order_id,
            "line_no": server_in.line_no,
            "unit_no": server_in.unit_no,
            "user_id": server_in.user_id,
            "created_at": datetime.now(UTC).isoformat(),
        }
        state.servers[server["id"]] = server
        state.by_key[idempotency_key] = (server, request_json)
        state.creations += 1
        return server

    @app.get("/servers/{server_id}")
    async def get_server(server_id: str) -> Any:
        server = state.servers.get(server_id)
        if server is None:
            return _error(404, "server_not_found", "server not found")
        return server

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "alive", "servers": len(state.servers)}

    return app
