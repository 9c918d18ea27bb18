"""Swagger UI's static files, served from the swagger-ui-bundle package so the docs page needs no CDN."""

from __future__ import annotations

from flask import Blueprint
from swagger_ui_bundle import swagger_ui_path

blp = Blueprint("swagger_ui_static", __name__, static_folder=swagger_ui_path, static_url_path="/docs/static")
