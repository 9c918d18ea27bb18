"""Query strings are read strictly: a parameter that takes one value, given several (`page=1&page=x`), is a 422.

webargs would silently take the first value. The parser is set on flask-smorest's Blueprint class when the
`service` package is imported, which is before any `service.*.routes` module builds its views, so every
blueprint, those added later included, reads its arguments this way.
"""

from __future__ import annotations

from typing import Any

import flask_smorest
import marshmallow as ma
from webargs.flaskparser import FlaskParser


def takes_many(field: ma.fields.Field | None) -> bool:
    return isinstance(field, (ma.fields.List, ma.fields.Tuple))


class StrictParser(FlaskParser):
    def load_querystring(self, req: Any, schema: ma.Schema) -> Any:
        by_key = {field.data_key or name: field for name, field in schema.fields.items()}
        repeated = {key: [f"give {key} once; it was given {len(values)} times"]
                    for key, values in req.args.lists()
                    if len(values) > 1 and key in by_key and not takes_many(by_key[key])}
        if repeated:
            raise ma.ValidationError(repeated)
        return super().load_querystring(req, schema)


flask_smorest.Blueprint.ARGUMENTS_PARSER = StrictParser()
