"""Provisions `server_plan` items on the external server panel over HTTP.

Retries are bounded and only for failures that may pass (connect errors, timeouts, 5xx); a 4xx
is the panel's final answer. Every attempt carries the same Idempotency-Key, so a retry or a
redelivered command gets the server the first attempt created instead of a second one.
"""

from __future__ import annotations

import logging

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from services.provisioning.domain import line_status_for
from services.provisioning.provisioners import (
    ItemOutcome,
    ItemToProvision,
    ProvisionContext,
    UnitOutcome,
)

log = logging.getLogger("services.provisioning.http_provisioner")

TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class PanelUnavailable(Exception):
    """The panel answered 5xx: worth another attempt."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"panel answered {response.status_code}")
        self.status_code = response.status_code


class ServerPanelProvisioner:
    def __init__(
        self,
        *,
        base_url: str,
        timeout_seconds: float,
        max_attempts: int,
        backoff_base_seconds: float = 0.2,
        backoff_max_seconds: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # One pooled client for the process: no TCP/TLS set-up per server provisioned.
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, timeout=self.timeout_seconds, transport=self.transport
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def provision(self, item: ItemToProvision, ctx: ProvisionContext) -> ItemOutcome:
        """One server per unit of the line, each under its own Idempotency-Key; a unit the panel
        refuses fails alone, the others are still built. Once the panel could not be reached
        within the retry budget, the units left are failed without calling it: one budget
        bounds the line, however many servers it holds."""
        units: list[UnitOutcome] = []
        gave_up: str | None = None
        for unit_no in range(1, item.quantity + 1):
            if gave_up is None:
                try:
                    units.append(await self._provision_unit(item, unit_no))
                    continue
                except (PanelUnavailable, *TRANSIENT) as exc:
                    log.warning("panel unreachable for %s: %r", item.unit_key(unit_no), exc)
                    gave_up = f"panel unreachable after {self.max_attempts} attempts: {exc!r}"
            units.append(UnitOutcome(unit_no, "failed", detail=gave_up))
        failed = [u for u in units if u.status == "failed"]
        delivered = [u for u in units if u.status == "delivered"]
        detail = f"{len(delivered)} of {len(units)} servers active"
        if failed:
            detail += "; " + "; ".join(f"unit {u.unit_no}: {u.detail}" for u in failed)
        return ItemOutcome(
            line_status_for(units=len(units), units_failed=len(failed)),
            detail=detail[:2000],
            external_ref=delivered[0].external_ref if delivered else None,
            units_failed=len(failed),
            units=tuple(units),
        )

    async def _provision_unit(self, item: ItemToProvision, unit_no: int) -> UnitOutcome:
        """The panel's answer for one unit; raises when it cannot be had within the budget."""
        response = await self._create_server(item, unit_no, item.unit_key(unit_no))
        if response.is_success:
            server_id = _server_id(response)
            if server_id is None:
                return UnitOutcome(unit_no, "failed", detail="panel answered without a server id")
            return UnitOutcome(unit_no, "delivered", detail="server active", external_ref=server_id)
        return UnitOutcome(
            unit_no,
            "failed",
            detail=f"panel refused ({response.status_code}): {response.text[:300]}",
        )

    async def _create_server(self, item: ItemToProvision, unit_no: int, key: str) -> httpx.Response:
        body = {
            "order_id": item.order_id,
            "line_no": item.line_no,
            "unit_no": unit_no,
            "plan": item.item_id,
            "user_id": item.user_id,
        }
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            # Full jitter: replicas retrying against a struggling panel spread out.
            wait=wait_random_exponential(
                multiplier=self.backoff_base_seconds, max=self.backoff_max_seconds
            ),
            retry=retry_if_exception_type((PanelUnavailable, *TRANSIENT)),
            reraise=True,
        )
        client = self._http()
        async for attempt in retrying:
            with attempt:
                response = await client.post(
                    "/servers", json=body, headers={"Idempotency-Key": key}
                )
                if response.status_code >= 500:
                    raise PanelUnavailable(response)
        return response


def _server_id(response: httpx.Response) -> str | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    server_id = payload.get("id") if isinstance(payload, dict) else None
    return str(server_id) if server_id else None
