"""Liveness and readiness: /healthz says the process is up, /readyz asks Redis, the registry and Docker."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from janitor import errors
from janitor.window import heartbeat
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
    """One registry's checks (Redis, the registry, the worker's report on Docker and storage), as /readyz
    and GET /v1/registries show them."""
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
    ready = all(c["ok"] for c in checks.values())
    # Informational: the index never makes the service unready (listings fill it on demand).
    checks["index"] = _index_check(st) if checks["redis"]["ok"] else {
        "ok": False, "code": "UNKNOWN", "message": "the index lives in Redis, which is down"}
    return {"status": "ready" if ready else "unavailable", "checks": checks}, ready
