"""GET /metrics for Prometheus; protected by METRICS_TOKEN when it is set."""

from __future__ import annotations

import hmac

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import Unauthorized

from service.errors import ErrorSchema
from service.metrics.collect import exposition
from service.state import state, states

blp = Blueprint("metrics", __name__, description="Prometheus metrics")


def check_metrics_token(token: str | None) -> None:
    if not token:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given and hmac.compare_digest(given.encode(), token.encode()):
        return
    error = Unauthorized("GET /metrics needs Authorization: Bearer <METRICS_TOKEN>")
    error.data = {"headers": {"WWW-Authenticate": 'Bearer realm="registry-janitor metrics"'}}  # type: ignore[attr-defined]
    raise error


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(operationId="getMetrics", summary="Prometheus metrics",
             description="HTTP requests by route and status with latency, jobs by kind and outcome, windows by "
                         "outcome, window length, write-refused seconds, GC duration, bytes freed, queue depth, "
                         "registry up and read-only, in the Prometheus text format. Needs "
                         "`Authorization: Bearer <METRICS_TOKEN>` when METRICS_TOKEN is set; API tokens are not "
                         "accepted here.",
             security=[{"metricsToken": []}, {}],
             responses={"200": {"description": "Prometheus text exposition format",
                                "content": {"text/plain": {"schema": {"type": "string"}}}}})
    @blp.alt_response(401, schema=ErrorSchema, description="METRICS_TOKEN is set and the request does not carry it")
    def get(self) -> Response:
        st = state()
        check_metrics_token(st.settings.metrics_token)
        # With REGISTRIES_FILE, every registry's figures, labelled `registry`.
        every = list(states().values())
        labelled = st.settings.registries_file is not None
        return Response(exposition(every if labelled else st, labelled), status=200, content_type=CONTENT_TYPE_LATEST)


def register(app: object, api: object) -> None:
    """Everything /metrics needs in one call from create_app: the route, its security scheme, the hooks."""
    from service.metrics.collect import install

    api.spec.components.security_scheme(  # type: ignore[attr-defined]
        "metricsToken", {"type": "http", "scheme": "bearer", "description": "METRICS_TOKEN"})
    api.register_blueprint(blp)  # type: ignore[attr-defined]
    install(app)  # type: ignore[arg-type]
