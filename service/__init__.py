"""The HTTP API: `gunicorn "service:create_app()"`."""

from __future__ import annotations

import logging

import redis
from flask import Flask, request
from flask_smorest import Api

from janitor.config.registries import load as load_registries
from janitor.config.settings import Settings
from janitor.config.tokens import Tokens
from janitor.jobs import records
from service import (
    args,  # noqa: F401  (for its effect: every blueprint reads query strings strictly)
    audit,
    auth,
    docs,
    errors,
    openapi,
    registry_scope,
)

log = logging.getLogger(__name__)


class JanitorApi(Api):
    """flask-smorest's Api with our error shape for every HTTP error."""

    ERROR_SCHEMA = errors.ErrorSchema
    # Every status is listed per operation (service/openapi.py); a catch-all "default" would hide gaps.
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _register_pagination_header(self) -> None:
        """We page in the body, not flask-smorest's X-Pagination header: no dead PaginationMetadata schema."""

    def handle_http_exception(self, error):  # type: ignore[no-untyped-def]
        return errors.http_error(error)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    known = load_registries(settings)  # a bad REGISTRIES_FILE stops the start here, with the reason
    app = registry_scope.JanitorFlask(__name__)
    app.config.update(
        API_TITLE="registry-janitor",
        API_VERSION=openapi.package_version(),
        # 3.1: a nullable nested object is anyOf [$ref, {type: null}], which generated clients type correctly.
        OPENAPI_VERSION="3.1.0",
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
    states = registry_scope.build_states(known)
    registry_scope.install(app, known, states)
    for st in states.values():
        try:
            records.adopt_legacy(st.conn, st.keys)  # upgrade: job records move under the registry's prefix
        except redis.RedisError:
            pass  # Redis away: the worker does it when it starts
    audit.setup(settings.log_format)
    tokens = Tokens(settings.api_tokens, settings.api_tokens_file, settings.events_tokens)  # reports bad token-file entries now
    api = JanitorApi(app, spec_kwargs={"marshmallow_plugin": openapi.CodesAsOneEnum(),
                                       "extra_plugins": [openapi.StandardResponses(),
                                                         registry_scope.RegistryScopedDocs()]})

    from service.deletions.routes import blp as deletions
    from service.events.routes import blp as events
    from service.gc.routes import blp as gc
    from service.health.routes import blp as health
    from service.jobs.routes import blp as jobs
    from service.policies.routes import blp as policies
    from service.protections.routes import blp as protections
    from service.registries.routes import blp as registries_blp
    from service.repositories.routes import blp as repositories
    from service.repositories.routes import usage_blp as usage
    from service.restore.routes import blp as restore
    from service.restore.routes import listing_blp as restorable

    # Every registry's resources: unprefixed for the default registry, and under /v1/registries/{registry}/.
    scoped = (repositories, deletions, jobs, restore, restorable, gc, policies, protections, usage, events)
    for blp in scoped:
        api.register_blueprint(blp)
    registry_scope.register_scoped(api, scoped)
    api.register_blueprint(registries_blp)
    app.before_request(lambda: auth.check(tokens) if request.path.startswith("/v1/") else None)
    app.before_request(registry_scope.check_registry)
    app.after_request(audit.record)
    api.register_blueprint(health)
    app.register_blueprint(docs.blp)
    errors.register(app)
    from janitor import logs
    from service import requestlog
    from service.metrics.routes import register as register_metrics

    logs.configure(settings.log_format)
    register_metrics(app, api)
    requestlog.install(app)
    from service.events.fast import ThinEvents

    app.wsgi_app = ThinEvents(app, tokens)  # type: ignore[method-assign]  # the registry's events, before Flask

    if settings.webhook_urls and not settings.webhook_secret:
        log.warning("WEBHOOK_URLS is set without WEBHOOK_SECRET: deliveries go out unsigned.")
    if not tokens.enabled:
        log.warning("API_TOKENS is not set: every /v1 endpoint, deletions included, is open to anyone who can "
                    "reach this service. Set API_TOKENS=token1,token2 in production.")
    return app
