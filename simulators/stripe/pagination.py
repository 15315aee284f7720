"""Stripe's cursor pagination (``starting_after``, ``ending_before``, ``limit``) and filters."""

from __future__ import annotations

from dataclasses import dataclass, field

from .objects import ParamError, StripeObject


@dataclass(frozen=True)
class ListFilter:
    """Equality filters on top-level fields (e.g. ``status``, ``payment_intent``, ``type``)."""

    equals: dict[str, str] = field(default_factory=dict)

    def matches(self, obj: StripeObject) -> bool:
        return all(obj.get(k) == v for k, v in self.equals.items())


@dataclass(frozen=True)
class Page:
    data: list[StripeObject]
    has_more: bool


def paginate(
    items: list[StripeObject],
    object_name: str,
    *,
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    filters: ListFilter,
) -> Page:
    """Stripe's cursor pagination over ``items`` (oldest first); pages are newest first.

    Cursors are positions in the unfiltered order, so a cursor object that a filter
    excludes still marks a valid place to continue from.
    """
    newest_first = items[::-1]
    ids = [o["id"] for o in newest_first]
    if starting_after is not None:
        after = newest_first[
            _cursor_index(ids, starting_after, object_name, "starting_after") + 1 :
        ]
        matching = [o for o in after if filters.matches(o)]
        return Page(matching[:limit], len(matching) > limit)
    if ending_before is not None:
        before = newest_first[: _cursor_index(ids, ending_before, object_name, "ending_before")]
        matching = [o for o in before if filters.matches(o)]
        return Page(matching[-limit:], len(matching) > limit)
    matching = [o for o in newest_first if filters.matches(o)]
    return Page(matching[:limit], len(matching) > limit)


def _cursor_index(ids: list[str], cursor: str, object_name: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise ParamError(
            f"No such {object_name}: '{cursor}'", param=param, code="resource_missing"
        ) from None
