"""Configuration, read in one place: the environment (`settings`), many registries (`registries`, REGISTRIES_FILE)
and API tokens with their scopes (`tokens`).

May import: `janitor.errors`. Imported by every other package; imports none of them.
"""
