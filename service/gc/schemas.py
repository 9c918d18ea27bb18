from __future__ import annotations

import marshmallow as ma

from service.validators import gc_mode_field


class GcRequestSchema(ma.Schema):
    """A maintenance window with no deletion (the body may be empty)."""

    class Meta:
        unknown = ma.RAISE

    verify = ma.fields.String(validate=ma.validate.OneOf(["targeted", "full"]), metadata={"description": (
        "What the window's integrity check (step `verify`) reads after GC. `targeted` (the default): only what "
        "this window could have broken: surviving manifests sharing a blob with what was deleted or swept, "
        "indexes naming a deleted or swept manifest, and every swept blob against the surviving references. "
        "`full`: every tag of every repository, with its progress in the step's outcome "
        "(repositories_checked of repositories_total, manifests_checked) as it goes.")})
    gc_mode = gc_mode_field()
