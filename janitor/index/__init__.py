"""The listing index: what the registry holds, kept in Redis so listings never walk the registry.

May import: `janitor.errors`, `janitor.config`, `janitor.registry`, `janitor.storage`, `janitor.planning`.
"""
