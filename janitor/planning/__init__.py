"""Deciding what to delete: a registry read before any rule (`snapshot`), the pure deletion rules (`rules`) and
retention rules (`retention`), the planner that joins them (`planner`, `policy_plan`), policies and their
store (`policies`), and plans held for approval (`approval`). Rules do no I/O and are tested in milliseconds.

May import: `janitor.errors`, `janitor.config`, `janitor.registry`, `janitor.storage`, `janitor.jobs`.
"""
