"""Request parameters in Stripe's wire format: decoding and the validators endpoints share.

Bodies are parsed by hand (``a[b][0][c]=v`` form encoding) because Stripe's nested
keys are not something FastAPI's form support understands. Validation failures raise
:class:`~.objects.ParamError`, which renders as Stripe's ``invalid_request_error``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from .objects import ParamError
from .pagination import ListFilter

Params = dict[str, Any]

# Parameters every list endpoint accepts.
LIST_PARAMS = frozenset({"limit", "starting_after", "ending_before", "expand"})


# --- form decoding ----------------------------------------------------------

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART_RE = re.compile(r"\[([^\[\]]*)\]")
# Hashes whose keys are user data: digit keys there must not turn them into lists.
_HASH_PARAMS = frozenset({"metadata"})


def parse_params(pairs: list[tuple[str, str]]) -> Params:
    """Decode Stripe-style nested form keys into dicts and lists.

    ``a[0][b]=1`` and ``a[][b]=1`` both give ``{"a": [{"b": "1"}]}``; the SDK sends the
    indexed form, curl users tend to send ``[]``.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        m = _KEY_RE.match(key)
        if m is None:
            raise ParamError(f"Invalid parameter name: {key}", param=key)
        parts = [m.group(1), *_PART_RE.findall(m.group(2))]
        node = root
        for depth, raw_part in enumerate(parts):
            part = raw_part if raw_part != "" else str(len(node))
            existing = node.get(part)
            if depth == len(parts) - 1:
                if existing is not None:
                    raise ParamError(
                        f"Invalid parameter: {key} was given more than once.", param=key
                    )
                node[part] = value
            else:
                if existing is None:
                    existing = node[part] = {}
                if not isinstance(existing, dict):
                    raise ParamError(
                        f"Invalid parameter: {key} mixes a value and a hash.", param=key
                    )
                node = existing
    return {k: _listify(k, v) for k, v in root.items()}


def _listify(key: str, value: Any) -> Any:
    if not isinstance(value, dict) or key in _HASH_PARAMS:
        return value
    out = {k: _listify(k, v) for k, v in value.items()}
    if out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


async def request_params(request: Request) -> Params:
    """Parameters of an API request: the query string of a GET, the form body otherwise."""
    if request.method == "GET":
        return parse_params(list(request.query_params.multi_items()))
    return await form_params(request)


async def form_params(request: Request) -> Params:
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParamError("Request body is not valid UTF-8.") from None
    return parse_params(parse_qsl(text, keep_blank_values=True))


# --- parameter validation ------------------------------------------------------


def reject_unknown(params: Params, allowed: frozenset[str], prefix: str = "") -> None:
    for key in params:
        if key not in allowed:
            name = f"{prefix}[{key}]" if prefix else key
            raise ParamError(
                f"Received unknown parameter: {name} (the Stripe simulator supports: "
                f"{', '.join(sorted(allowed))})",
                param=name,
                code="parameter_unknown",
            )


def missing_param(param: str) -> ParamError:
    return ParamError(f"Missing required param: {param}.", param=param, code="parameter_missing")


def as_string(value: Any, param: str, *, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise ParamError(f"Invalid string: {param} must be a string.", param=param)
    if max_length is not None and len(value) > max_length:
        raise ParamError(
            f"Invalid string: {param} must be at most {max_length} characters.",
            param=param,
        )
    return value


def opt_string(params: Params, key: str, *, max_length: int | None = None) -> str | None:
    value = params.get(key)
    # An empty string means "unset" in Stripe's form encoding.
    if value is None or value == "":
        return None
    return as_string(value, key, max_length=max_length)


def as_integer(value: Any, param: str, *, minimum: int | None = None) -> int:
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        number = int(value)
        if minimum is None or number >= minimum:
            return number
        raise ParamError(
            f"This value must be greater than or equal to {minimum}.",
            param=param,
            code="parameter_invalid_integer",
        )
    raise ParamError(f"Invalid integer: {value}", param=param, code="parameter_invalid_integer")


def as_hash(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ParamError(f"Invalid hash: {param} must be a hash.", param=param)
    return value


def as_array(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise ParamError(f"Invalid array: {param} must be an array.", param=param)
    return value


def url_param(params: Params, key: str, *, required: bool) -> str | None:
    value = opt_string(params, key, max_length=5000)
    if value is None:
        if required:
            raise missing_param(key)
        return None
    if not re.match(r"^https?://[^\s/]+", value):
        raise ParamError("Not a valid URL", param=key, code="url_invalid")
    return value


def metadata_param(params: Params) -> dict[str, str]:
    raw = params.get("metadata")
    if raw is None or raw == "":
        return {}
    out: dict[str, str] = {}
    for k, v in as_hash(raw, "metadata").items():
        param = f"metadata[{k}]"
        if len(k) > 40:
            raise ParamError("Metadata keys must be at most 40 characters.", param=param)
        value = as_string(v, param, max_length=500)
        if value != "":  # empty value unsets a key, so on create it simply is not stored
            out[k] = value
    if len(out) > 50:
        raise ParamError("Metadata can have at most 50 keys.", param="metadata")
    return out


def expand_param(params: Params) -> list[str]:
    raw = params.get("expand")
    if raw is None:
        return []
    return [as_string(v, f"expand[{i}]") for i, v in enumerate(as_array(raw, "expand"))]


def list_expand_param(params: Params) -> list[str]:
    # On list endpoints, fields of the listed objects are expanded as `data.<field>`.
    paths = []
    for path in expand_param(params):
        if not path.startswith("data."):
            raise ParamError(f"This property cannot be expanded ({path}).", param="expand")
        paths.append(path.removeprefix("data."))
    return paths


# --- amounts ---------------------------------------------------------------------

# Stripe's minimum charge per presentment currency, in minor units ("Minimum and maximum charge
# amounts", https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts). Currencies
# not listed here are not held to a minimum by the simulator.
MIN_CHARGE_AMOUNTS: dict[str, int] = {
    "aed": 200,
    "aud": 50,
    "bgn": 100,
    "brl": 50,
    "cad": 50,
    "chf": 50,
    "czk": 1500,
    "dkk": 250,
    "eur": 50,
    "gbp": 30,
    "hkd": 400,
    "huf": 17500,
    "inr": 50,
    "jpy": 50,
    "mxn": 1000,
    "myr": 200,
    "nok": 300,
    "nzd": 50,
    "pln": 200,
    "ron": 200,
    "sek": 300,
    "sgd": 50,
    "thb": 1000,
    "usd": 50,
}
# "The amount value supports up to eight digits" (same page): 99999999 minor units, e.g.
# $999,999.99. Stripe allows a few currencies more (IDR, say); the simulator holds all to eight.
MAX_CHARGE_AMOUNT = 99_999_999
# Currencies without minor units: their amounts are shown as whole numbers.
_ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())


def shown_amount(amount: int, currency: str) -> str:
    """An amount as Stripe's messages show it ("0.50 eur", "50 jpy")."""
    if currency in _ZERO_DECIMAL:
        return f"{amount:,} {currency}"
    return f"{amount // 100:,}.{amount % 100:02d} {currency}"


def check_charge_amount(amount: int, currency: str) -> None:
    """Refuse what Stripe would not charge in one payment: below the currency's minimum
    (`amount_too_small`) or past eight digits (`amount_too_large`)."""
    minimum = MIN_CHARGE_AMOUNTS.get(currency, 0)
    if amount < minimum:
        raise ParamError(
            f"Amount must be at least {shown_amount(minimum, currency)}",
            code="amount_too_small",
        )
    if amount > MAX_CHARGE_AMOUNT:
        raise ParamError(
            f"Amount must be no more than {shown_amount(MAX_CHARGE_AMOUNT, currency)}",
            code="amount_too_large",
        )


# --- list endpoints ------------------------------------------------------------


@dataclass(frozen=True)
class ListArgs:
    limit: int
    starting_after: str | None
    ending_before: str | None


def list_args(params: Params) -> ListArgs:
    limit = 10
    if params.get("limit") not in (None, ""):
        limit = as_integer(params["limit"], "limit", minimum=1)
        if limit > 100:
            raise ParamError(
                "This value must be less than or equal to 100.",
                param="limit",
                code="parameter_invalid_integer",
            )
    starting_after = opt_string(params, "starting_after")
    ending_before = opt_string(params, "ending_before")
    if starting_after is not None and ending_before is not None:
        raise ParamError(
            "You may only specify one of these parameters: ending_before, starting_after.",
            param="ending_before",
        )
    return ListArgs(limit, starting_after, ending_before)


def list_filters(params: Params, keys: tuple[str, ...]) -> ListFilter:
    equals = {}
    for key in keys:
        value = opt_string(params, key)
        if value is not None:
            equals[key] = value
    return ListFilter(equals)
