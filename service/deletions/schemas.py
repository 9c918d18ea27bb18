from __future__ import annotations

from typing import Any

import marshmallow as ma

from janitor.registry import names
from service import validators

KINDS = ("tags", "digests", "all_tags", "untagged", "all_repositories")
DEFAULTS = {"dry_run": False, "force": False, "referrers": True}

# The grammar of janitor.registry.names, for clients and fuzzers (the validators apply it on the server).
REPOSITORY_PATTERN = names.REPOSITORY_RE.pattern
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"  # names.TAG_RE, which is ASCII-only
DIGEST_PATTERN = names.DIGEST_RE.pattern

# Said in words, not as oneOf: generated clients turn a oneOf into a union of partial models.
RULES = """Rules:
- exactly one of `tags`, `digests`, `all_tags: true`, `untagged: true`, `all_repositories: true`;
- `repository` is required, except with `all_repositories`, which takes none and needs `confirm`: the
  registry's host[:port], as the service is configured to reach it;
- `confirm` goes only with `all_repositories`;
- `tags` and `digests` hold 1 to 100 entries; no other field is accepted."""

EXAMPLES = {
    "tags": {"summary": "Some tags", "value": {"repository": "team/app", "tags": ["v1.0", "v1.1"]}},
    "dryRun": {"summary": "The plan only, nothing changed",
               "value": {"repository": "team/app", "tags": ["v1.0"], "dry_run": True}},
    "digests": {"summary": "Manifests by digest",
                "value": {"repository": "team/app", "digests": ["sha256:" + "0" * 64]}},
    "untagged": {"summary": "What no tag reaches", "value": {"repository": "team/app", "untagged": True}},
    "allTags": {"summary": "A whole repository", "value": {"repository": "team/app", "all_tags": True}},
    "allRepositories": {"summary": "Everything (confirm repeats the registry's host)",
                        "value": {"all_repositories": True, "confirm": "registry.example.com:5000"}},
}


class DeletionSchema(ma.Schema):
    """What to delete: some tags, some manifests by digest, every tag of the repository (`all_tags`), the
    manifests no tag reaches (`untagged`), or every repository (`all_repositories`)."""

    class Meta:
        unknown = ma.RAISE
        description = ("What to delete: some tags, some manifests by digest, every tag of the repository "
                       "(`all_tags`), the manifests no tag reaches (`untagged`), or every repository "
                       "(`all_repositories`).\n\n" + RULES)

    repository = ma.fields.String(validate=validators.repository, metadata={
        "description": "Repository name, e.g. team/app; required unless all_repositories. At most 255 "
                       "characters as the registry counts them (docker.io/library/ before a one-component "
                       "name, docker.io/ before one whose first component is not a host): 237 always fit",
        "pattern": REPOSITORY_PATTERN, "maxLength": names.REPOSITORY_ALWAYS_FITS})
    tags = ma.fields.List(ma.fields.String(validate=validators.tag, metadata={"pattern": TAG_PATTERN}),
                          validate=ma.validate.Length(min=1, max=100),
                          metadata={"description": "Only these tags go; tags sharing their manifest stay"})
    digests = ma.fields.List(ma.fields.String(validate=validators.digest, metadata={"pattern": DIGEST_PATTERN}),
                             validate=ma.validate.Length(min=1, max=100),
                             metadata={"description": "These manifests go, with every tag pointing at them"})
    all_tags = ma.fields.Boolean(metadata={"description": "Every manifest goes, then the repository itself"})
    untagged = ma.fields.Boolean(metadata={
        "description": "Manifests no tag reaches go; tagged ones and children of tagged indexes stay"})
    all_repositories = ma.fields.Boolean(metadata={"description": "Every repository goes (needs confirm)"})
    confirm = ma.fields.String(validate=ma.validate.Length(min=1), metadata={
        "description": "The registry's host[:port], repeated to confirm all_repositories"})
    # Defaults are applied in with_defaults, not load_default: a `default` in the document makes
    # openapi-typescript type these fields as required in the request body.
    dry_run = ma.fields.Boolean(metadata={
        "description": "Report the plan (tags, manifests, blobs and bytes to be freed) and change nothing. "
                       "Default: false"})
    force = ma.fields.Boolean(metadata={
        "description": "Delete a manifest even though a tagged index references it. Default: false"})
    referrers = ma.fields.Boolean(metadata={
        "description": "Also delete referrers (sha256-<hex> tags: signatures, SBOMs) of deleted manifests. "
                       "Default: true"})
    gc_mode = validators.gc_mode_field()
    override_protection = ma.fields.Boolean(metadata={
        "description": "Scope `admin` only: delete even what protected tags (GET /v1/protections) keep; the job "
                       "records it in its request. Default: false"})
    restore_window = validators.restore_window_field()
    approval = ma.fields.String(validate=ma.validate.OneOf(["required"]), metadata={
        "description": "`required`: plan now, wait as `awaiting_approval` with the plan in `result.plan`, and "
                       "change nothing until another token approves (POST /v1/jobs/{id}/approve). "
                       "JANITOR_REQUIRE_APPROVAL=true makes it the rule for every real deletion"})

    @ma.pre_load
    def strict_override(self, data: Any, **_: Any) -> Any:
        """`override_protection` passes rules by: only a JSON true or false means anything here."""
        if isinstance(data, dict) and "override_protection" in data and not isinstance(data["override_protection"], bool):
            raise ma.ValidationError({"override_protection": ["must be true or false"]})
        return data

    @ma.post_load
    def with_defaults(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {**DEFAULTS, **data}

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
