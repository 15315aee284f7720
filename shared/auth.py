"""Shopper and operator identity: a bearer JWT (HS256, key from settings), verified once here."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, Request

from shared.errors import ApiError

OPERATOR = "operator"
ALGORITHM = "HS256"


@dataclass(frozen=True)
class Principal:
    user_id: str
    roles: frozenset[str]

    @property
    def is_operator(self) -> bool:
        return OPERATOR in self.roles


def issue_token(
    secret: str, user_id: str, *, roles: tuple[str, ...] = (), ttl_seconds: int = 86400
) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "roles": list(roles), "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "token_expired", "the bearer token has expired") from None
    except jwt.InvalidTokenError:
        raise ApiError(401, "invalid_token", "the bearer token is not valid") from None
    roles = claims.get("roles") or []
    if not isinstance(roles, list):
        raise ApiError(401, "invalid_token", "the bearer token is not valid")
    return Principal(user_id=str(claims["sub"]), roles=frozenset(str(r) for r in roles))


def may_see(principal: Principal, owner_id: str) -> bool:
    """Shoppers see their own resources, operators everyone's. Callers answer "not found"
    otherwise, so a stranger cannot even learn that the resource exists."""
    return principal.user_id == owner_id or principal.is_operator


# The dependencies are async although they never await: FastAPI runs a plain `def` dependency in
# a worker thread, a thread hand-over per request for a microsecond of work.
async def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing_token", "send Authorization: Bearer <token>")
    secret: str = request.app.state.jwt_secret
    return verify_token(secret, token.strip())


async def operator_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    if not principal.is_operator:
        raise ApiError(403, "operator_only", "this endpoint needs the operator role")
    return principal


Shopper = Annotated[Principal, Depends(current_principal)]
Operator = Annotated[Principal, Depends(operator_principal)]
