"""Liveness and readiness: /healthz says the process is up, /readyz asks Redis, the registry and Docker."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from janitor import errors
from janitor.window import heartbeat, leftovers
from service.health.schemas import HealthSchema, ReadinessSchema
from service.state import State, state

blp = Blueprint("health", __name__, description="Liveness and readiness probes")


@blp.route("/healthz")
class Health(MethodView):
    @blp.doc(operationId="getHealth", summary="Liveness", security=[],
             description="Answers 200 while the API process serves requests; asks nothing else.")
    @blp.response(200, HealthSchema, description="The process is up")
    def get(self) -> dict[str, str]:
        return {"status": "ok"}


def _check(fn: Any) -> dict[str, Any]:
    try:
        fn()
    except errors.JanitorError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - a probe reports every failure, it never raises
        return {"ok": False, "code": "UNAVAILABLE", "message": str(exc)}
    return {"ok": True}


def _index_check(st: Any) -> dict[str, Any]:
    try:
        meta = st.index.meta()
        mode = st.index.mode(meta)
    except Exception as exc:  # noqa: BLE001 - a probe reports every failure, it never raises
        return {"ok": False, "code": "UNAVAILABLE", "message": str(exc)}
    out: dict[str, Any] = {"ok": True, "mode": mode}
    for key in ("filled_at", "reconciled_at", "last_event_at"):
        if meta.get(key):
            out[key] = meta[key]
    if not meta.get("filled_at"):
        out["message"] = "not filled yet: listings read the registry for what is not indexed"
    return out


@blp.route("/readyz")
class Ready(MethodView):
    @blp.doc(operationId="getReadiness", summary="Readiness", security=[],
             description="Asks Redis and the registry, and reads the worker's last report on Docker and the "
                         "registry container: 200 when all are reachable, else 503 with each check's code. "
                         "`checks.index` (informational, never makes it 503) says how the listing index is kept: "
                         "`mode` notifications (events from the registry) or polling, and when it was filled, last "
                         "reconciled and last got an event.")
    @blp.response(200, ReadinessSchema, description="Redis, the registry and Docker are reachable")
    @blp.alt_response(503, schema=ReadinessSchema, description="At least one dependency is unreachable")
    def get(self) -> tuple[dict[str, Any], int]:
        found, ready = readiness(state())
        return found, 200 if ready else 503


def readiness(st: State) -> tuple[dict[str, Any], bool]:
    """One registry's checks (Redis, the registry, the worker's report on Docker and storage, whether the
    registry takes writes), as /readyz and GET /v1/registries show them."""
    checks = {
        "redis": _check(st.conn.ping),
        "registry": _check(st.client.ping),
    }
    checks["docker"] = heartbeat.read(st.conn, st.keys) if checks["redis"]["ok"] else {
        "ok": False, "code": "UNKNOWN", "message": "the worker reports Docker through Redis, which is down"}
    # The storage driver and the deployment traps, as the worker last saw them (it reads the container).
    found = checks["docker"].pop("storage", None)
    if found is not None:
        checks["storage"] = found
    if checks["redis"]["ok"]:
        window = _window_in_progress(st)
        checks["writes"] = _writes_check(st, window)
        restarting = window and window.get("restarting")
        if restarting:
            # A window's own restart (fence or unfence): said as such, not as a registry that went away.
            said = {"ok": False, "code": "MAINTENANCE_RESTART", "window": window["id"],
                    "message": f"restarting for maintenance (window {window['id']})"}
            if not checks["registry"]["ok"]:
                checks["registry"] = said
            if checks["docker"].get("code") == heartbeat.NOT_RUNNING:
                checks["docker"] = {**said, **({"at": checks["docker"]["at"]} if "at" in checks["docker"] else {})}
    ready = all(c["ok"] for c in checks.values())
    # Informational: the index never makes the service unready (listings fill it on demand).
    checks["index"] = _index_check(st) if checks["redis"]["ok"] else {
        "ok": False, "code": "UNKNOWN", "message": "the index lives in Redis, which is down"}
    return {"status": "ready" if ready else "unavailable", "checks": checks}, ready


# Steps whose changes restart the registry container.
RESTARTING_STEPS = ("fence", "restart")


def _window_in_progress(st: State) -> dict[str, Any] | None:
    """The window holding the lease: its id, and whether it is restarting the registry now. None when no
    window holds it. Job records are read only while a window runs."""
    try:
        if not st.conn.exists(st.keys.lock):
            return None
        for job in st.store.running():
            steps = job.get("steps") or []
            window_id = (job.get("window") or {}).get("id")
            if window_id:
                last = steps[-1] if steps else {}
                return {"id": window_id, "restarting": last.get("name") in RESTARTING_STEPS and
                        last.get("status") == "running"}
    except Exception:  # noqa: BLE001 - a probe reports every failure, it never raises
        return None
    return {"id": None, "restarting": False}


def _writes_check(st: State, window: dict[str, Any] | None) -> dict[str, Any]:
    """Whether the registry takes writes, from the worker's last look (the config marker, else a blob
    upload). Read-only while a window holds the lease is maintenance; read-only without one is a registry
    left refusing pushes (a window that died, or anything else), and makes /readyz 503."""
    try:
        found = leftovers.read(st.conn, st.keys)
    except Exception as exc:  # noqa: BLE001 - a probe reports every failure, it never raises
        return {"ok": False, "code": "UNAVAILABLE", "message": str(exc)}
    if found is None:
        return {"ok": True, "read_only": None, "message": "no worker reported whether the registry takes writes "
                f"in the last {leftovers.REPORT_TTL:.0f}s"}
    out = {"ok": True, "read_only": bool(found["read_only"]), "source": found.get("source"), "at": found.get("at")}
    if not found["read_only"]:
        return out
    if window is not None:
        named = found.get("window") or window.get("id")
        return {**out, "window": named, "message": f"read-only for maintenance (window {named})"}
    why = "its config carries a maintenance window's read-only marker" if found.get("source") == \
        leftovers.CONFIG_MARKER else "a blob upload was refused"
    return {**out, "ok": False, "code": "REGISTRY_READ_ONLY", "window": found.get("window"),
            "message": f"the registry refuses pushes ({why}) and no maintenance window is running; the worker "
                       "recovers a window that died within the lease's TTL, else check the registry's config"}
