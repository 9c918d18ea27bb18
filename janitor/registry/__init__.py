"""The registry as the janitor reaches it: its HTTP API (`client`), manifests and digests (`manifests`), the
distribution name grammar (`names`), the 2.x untag (`untag`), the after-GC integrity check (`integrity`), and its
container on a Docker engine (`container`: exec, restart, environment; `exec_output`: an exec's output read
whole).

May import: `janitor.errors`, `janitor.config`.
"""
