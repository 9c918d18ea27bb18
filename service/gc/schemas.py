from __future__ import annotations

import marshmallow as ma


class GcRequestSchema(ma.Schema):
    """A maintenance window with no deletion (the body may be empty)."""

    class Meta:
        unknown = ma.RAISE
