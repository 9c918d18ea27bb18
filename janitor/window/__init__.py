"""The maintenance window's safety. `guard.WindowGuard` is the one owner of the lease (`lease`), the write fence
(`fence`) and the holds (`holds`); around them: the write probes (`probe`), deployments the fence cannot work
around (`preflight`), `garbage-collect` (`gc`), the registry's blob cache (`cache`) and the worker's heartbeat
(`heartbeat`).

May import: `janitor.errors`, `janitor.config`, `janitor.registry`, `janitor.storage`, `janitor.jobs`.
"""
