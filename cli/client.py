"""A small HTTP client of the janitor's API, as the CLI needs it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

# Where a wait ends: every final status, and `awaiting_approval`, where a job stays until a person acts.
FINISHED = ("succeeded", "failed", "rejected", "expired", "cancelled")
PARKED = ("awaiting_approval",)


class ApiError(Exception):
    """The API answered with its error shape {code, message, status, details}."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code} ({status}): {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or {}


class Unreachable(Exception):
    """No answer from JANITOR_URL."""


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0,
                 registry: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # With a registry name, every /v1/... call goes to /v1/registries/<registry>/... (REGISTRIES_FILE).
        self.registry = registry
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "registry-janitor-cli"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        if self.registry and path.startswith("/v1/"):
            path = f"/v1/registries/{quote(self.registry, safe='')}/{path[len('/v1/'):]}"
        try:
            resp = self.session.request(method, self.url + path, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach the janitor at {self.url} ({type(exc).__name__}); is JANITOR_URL "
                              "right and the service running?") from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
                raise ApiError(resp.status_code, body["code"], body["message"], body.get("details"))
            except (ValueError, KeyError, TypeError):
                raise ApiError(resp.status_code, f"HTTP_{resp.status_code}", resp.text[:500] or resp.reason) from None
        if resp.status_code == 204:
            return None
        return resp.json()

    def _pages(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._call("GET", path, params={**(params or {}), "page": page, "page_size": 500})
            items.extend(body["items"])
            if not body["items"] or len(items) >= body["total"]:
                return items
            page += 1

    def repositories(self, sort: str | None = None) -> list[dict[str, Any]]:
        """Every repository with its tag count and size (bytes of its blobs, each once)."""
        return self._pages("/v1/repositories", {"sort": sort} if sort else None)

    def tags(self, repository: str) -> list[dict[str, Any]]:
        return self._pages(f"/v1/repositories/{repository}/tags")

    def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/deletions", json=body)

    def gc(self) -> dict[str, Any]:
        return self._call("POST", "/v1/gc", json={})

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def jobs(self, limit: int = 50, **filters: str | None) -> list[dict[str, Any]]:
        """Recent jobs, newest first, where the server offers a job list (GET /v1/jobs); `filters` are its query
        parameters (status, kind, repository, policy, requested_by, since), None ones left out."""
        params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
        body = self._call("GET", "/v1/jobs", params={**params, "page_size": min(max(limit, 1), 500)})
        items = body["items"] if isinstance(body, dict) else body
        return items[:limit]

    def approve(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{quote(job_id, safe='')}/approve")

    def reject(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{quote(job_id, safe='')}/reject")

    def policies(self) -> list[dict[str, Any]]:
        return self._pages("/v1/policies")

    def policy(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/policies/{quote(name, safe='')}")

    def policy_run(self, name: str, dry_run: bool) -> dict[str, Any]:
        """A run of the policy: a job of kind `policy` (dry run: its plan only)."""
        return self._call("POST", f"/v1/policies/{quote(name, safe='')}/runs", json={"dry_run": dry_run})

    def protections(self) -> list[dict[str, Any]]:
        return self._pages("/v1/protections")

    def protection_create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/protections", json=body)

    def protection_replace(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/v1/protections/{quote(name, safe='')}", json=body)

    def protection_delete(self, name: str) -> None:
        self._call("DELETE", f"/v1/protections/{quote(name, safe='')}")

    def follow(self, job_id: str, on_change: Callable[[dict[str, Any]], None], interval: float = 0.5,
               timeout: float | None = None) -> dict[str, Any]:
        """Poll until the job finishes or is parked awaiting approval, calling on_change whenever its status or
        steps change."""
        seen: Any = None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            state = (job["status"], [(s["name"], s["status"]) for s in job["steps"]])
            if state != seen:
                seen = state
                on_change(job)
            if job["status"] in FINISHED or job["status"] in PARKED:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f}s")
            time.sleep(interval)
