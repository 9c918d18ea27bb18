"""The registry's storage read directly: its layout (`layout`, every path built from a validated name), the
commands run in the registry's container (`files`), revisions seen by the last window (`revisions`), blob sizes
(`freed`) and the content cache of manifests and configs (`contents`).

May import: `janitor.errors`, `janitor.config`, `janitor.registry`.
"""
