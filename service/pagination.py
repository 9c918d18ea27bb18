"""Page arguments and the page envelope every list endpoint uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import marshmallow as ma

T = TypeVar("T")


class PageQueryArgsSchema(ma.Schema):
    # Bounded: a page past any list is empty, and a huge one must not overflow the slice that skips to it.
    page = ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1, max=1_000_000))
    page_size = ma.fields.Integer(load_default=50, validate=ma.validate.Range(min=1, max=500))


def page_schema(item: type[ma.Schema], name: str) -> type[ma.Schema]:
    return ma.Schema.from_dict(
        {
            "items": ma.fields.List(ma.fields.Nested(item), required=True),
            "page": ma.fields.Integer(required=True),
            "page_size": ma.fields.Integer(required=True),
            "total": ma.fields.Integer(required=True, metadata={"description": "Items on all pages"}),
        },
        name=name,
    )


def window(items: Sequence[T], args: dict[str, int]) -> tuple[Sequence[T], dict[str, int]]:
    start = (args["page"] - 1) * args["page_size"]
    return items[start:start + args["page_size"]], {
        "page": args["page"], "page_size": args["page_size"], "total": len(items),
    }


def envelope(items: list[Any], meta: dict[str, int]) -> dict[str, Any]:
    return {"items": items, **meta}
