"""The HTTP API: `gunicorn "service:create_app()"`."""

from __future__ import annotations

import logging

from flask import Flask, request
from flask_smorest import Api

from janitor.settings import Settings
from service import auth, docs, errors
from service.state import State

log = logging.getLogger(__name__)


class JanitorApi(Api):
    """flask-smorest's Api with our error shape for every HTTP error."""

    ERROR_SCHEMA = errors.ErrorSchema

    def handle_http_exception(self, error):  # type: ignore[no-untyped-def]
        return errors.http_error(error)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        API_TITLE="registry-janitor",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="/docs/static/",  # served from the swagger-ui-bundle package: no CDN
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_SPEC_OPTIONS={
            "info": {"description": "Safe maintenance of a self-hosted distribution registry: delete, "
                                    "garbage-collect and restart in one observable job."},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearerAuth": []}],
        },
    )
    app.extensions["janitor"] = State.build(settings)
    api = JanitorApi(app)

    from service.deletions.routes import blp as deletions
    from service.gc.routes import blp as gc
    from service.health.routes import blp as health
    from service.jobs.routes import blp as jobs
    from service.policies.routes import blp as policies
    from service.repositories.routes import blp as repositories

    for blp in (repositories, deletions, jobs, gc, policies):
        api.register_blueprint(blp)
    app.before_request(lambda: auth.check_token(settings) if request.path.startswith("/v1/") else None)
    api.register_blueprint(health)
    app.register_blueprint(docs.blp)
    errors.register(app)

    if not settings.api_tokens:
        log.warning("API_TOKENS is not set: every /v1 endpoint, deletions included, is open to anyone who can "
                    "reach this service. Set API_TOKENS=token1,token2 in production.")
    return app
