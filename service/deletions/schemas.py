from __future__ import annotations

from typing import Any

import marshmallow as ma

from service import validators

KINDS = ("tags", "digests", "all_tags", "untagged", "all_repositories")


class DeletionSchema(ma.Schema):
    """What to delete. Exactly one of: some tags, some manifests by digest, every tag of the repository
    (`all_tags`), the manifests no tag reaches (`untagged`), or every repository (`all_repositories`,
    with `confirm` repeating the registry's host)."""

    class Meta:
        unknown = ma.RAISE

    repository = ma.fields.String(validate=validators.repository, metadata={
        "description": "Repository name, e.g. team/app; required unless all_repositories"})
    tags = ma.fields.List(ma.fields.String(validate=validators.tag), validate=ma.validate.Length(min=1, max=100),
                          metadata={"description": "Only these tags go; tags sharing their manifest stay"})
    digests = ma.fields.List(ma.fields.String(validate=validators.digest), validate=ma.validate.Length(min=1, max=100),
                             metadata={"description": "These manifests go, with every tag pointing at them"})
    all_tags = ma.fields.Boolean(metadata={"description": "Every manifest goes, then the repository itself"})
    untagged = ma.fields.Boolean(metadata={
        "description": "Manifests no tag reaches go; tagged ones and children of tagged indexes stay"})
    all_repositories = ma.fields.Boolean(metadata={"description": "Every repository goes (needs confirm)"})
    confirm = ma.fields.String(metadata={"description": "The registry's host[:port], repeated to confirm "
                                                        "all_repositories"})
    dry_run = ma.fields.Boolean(load_default=False, metadata={
        "description": "Report the plan (tags, manifests, blobs and bytes to be freed) and change nothing"})
    force = ma.fields.Boolean(load_default=False, metadata={
        "description": "Delete a manifest even though a tagged index references it"})
    approval = ma.fields.String(validate=ma.validate.OneOf(["required"]), metadata={
        "description": "`required`: plan now, wait as `awaiting_approval` with the plan in `result.plan`, and "
                       "change nothing until another token approves (POST /v1/jobs/{id}/approve). "
                       "JANITOR_REQUIRE_APPROVAL=true makes it the rule for every real deletion"})
    referrers = ma.fields.Boolean(load_default=True, metadata={
        "description": "Also delete referrers (sha256-<hex> tags: signatures, SBOMs) of deleted manifests"})

    @ma.validates_schema
    def one_kind(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("approval") and data.get("dry_run"):
            raise ma.ValidationError("a dry run changes nothing, so it needs no approval", "approval")
        given = [k for k in KINDS if data.get(k)]
        if len(given) != 1:
            raise ma.ValidationError(f"give exactly one of {', '.join(KINDS)}", "_schema")
        if given[0] == "all_repositories":
            if "repository" in data:
                raise ma.ValidationError("all_repositories takes no repository", "repository")
            if not data.get("confirm"):
                raise ma.ValidationError("repeat the registry's host[:port] to delete every repository", "confirm")
        elif "repository" not in data:
            raise ma.ValidationError("Missing data for required field.", "repository")
        elif "confirm" in data:
            raise ma.ValidationError("confirm goes only with all_repositories", "confirm")
