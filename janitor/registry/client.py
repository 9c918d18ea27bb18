"""A client for the distribution HTTP API (v2), with basic and bearer-token auth."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from janitor import errors
from janitor.config.settings import Settings
from janitor.registry.manifests import ACCEPT, Manifest, parse, sha256_digest

# Connections kept per registry: as many as the widest pool of parallel reads (index fill, API threads).
POOL_SIZE = 32

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_NEXT_LINK = re.compile(r"<([^>]+)>;\s*rel=\"?next\"?")
_REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
# What is read from the registry is bounded: a manifest by distribution's own limit, an image config by ours.
MANIFEST_LIMIT = 4 * 1024 * 1024
CONFIG_LIMIT = 8 * 1024 * 1024
LIST_LIMIT = 16 * 1024 * 1024  # one page of _catalog or tags/list


def origin(url: str) -> tuple[str, str, int]:
    """scheme, host, port (the default one when absent): credentials go to one origin, not one host name."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme, 0)


def read_bounded(resp: requests.Response, limit: int, what: str) -> bytes:
    """The body, read in chunks and abandoned past `limit` bytes, whatever Content-Length claims."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        resp.close()
        raise errors.RegistryResponseTooLarge(
            f"{what} is {int(declared)} bytes, more than the {limit} bytes the janitor reads", limit=limit,
            size=int(declared))
    body = bytearray()
    for chunk in resp.iter_content(64 * 1024):
        body += chunk
        if len(body) > limit:
            resp.close()
            raise errors.RegistryResponseTooLarge(
                f"{what} is larger than the {limit} bytes the janitor reads; stopped reading", limit=limit)
    return bytes(body)


def _retryable(method: str, exc: requests.ConnectionError) -> bool:
    if method in ("GET", "HEAD"):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _error_code(resp: requests.Response) -> str:
    try:
        errs = resp.json().get("errors") or []
        return str(errs[0].get("code", "")) if errs else ""
    except (ValueError, AttributeError):
        return ""


# Sent with every request, so the registry's pull notifications of the janitor's own reads can be told apart
# (janitor.planning.pulls ignores them: a HEAD to check a tag is no pull).
USER_AGENT = "registry-janitor"


class RegistryClient:
    """One registry; thread-safe enough for the API's threads (a session per client, tokens cached by scope)."""

    def __init__(
        self,
        base_url: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        retry_seconds: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.origin = origin(self.base_url)
        self.retry_seconds = retry_seconds
        self.username = username
        self.password = password
        self.timeout = timeout
        self.session = requests.Session()
        # The environment's proxies and CA bundle are read once per origin (`_environment`), not by requests
        # on every request: it scans the whole environment each time, a third of a read's CPU.
        self.session.trust_env = False
        self.session.headers["User-Agent"] = f"{USER_AGENT} (python-requests/{requests.__version__})"
        self._environments: dict[tuple[str, str, int], dict[str, Any]] = {}
        # Parallel readers (the index fill, policies) share this session: keep that many connections alive.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryClient:
        return cls(settings.registry_url, settings.registry_username, settings.registry_password,
                   settings.http_timeout, settings.registry_retry)

    # -- transport -------------------------------------------------------------------------------

    def _auth_headers(self, scope: str, url: str) -> dict[str, str]:
        """Credentials for the registry's own origin only: never for a Location or Link elsewhere."""
        if origin(url) != self.origin:
            return {}
        with self._lock:
            token = self._tokens.get(scope)
            basic = self._basic
        if token:
            return {"Authorization": f"Bearer {token}"}
        if basic and self.username is not None:
            return {"Authorization": requests.auth._basic_auth_str(self.username, self.password or "")}
        return {}

    def _authenticate(self, challenge: str, scope: str) -> None:
        kind, _, params = challenge.partition(" ")
        if kind.lower() == "basic":
            if self.username is None:
                raise errors.RegistryAuthFailed("the registry wants basic auth: set REGISTRY_USERNAME and REGISTRY_PASSWORD")
            with self._lock:
                self._basic = True
            return
        if kind.lower() != "bearer":
            raise errors.RegistryAuthFailed(f"unsupported registry auth challenge: {challenge}")
        values = dict(_CHALLENGE_PARAM.findall(params))
        realm = values.get("realm", "")
        if urlsplit(realm).scheme.lower() not in ("http", "https") or not urlsplit(realm).hostname:
            raise errors.RegistryAuthFailed(f"the registry's token challenge names no usable realm: {realm!r}")
        # Several scopes come space-separated in one challenge; the token protocol wants one parameter each.
        query = [("service", values["service"])] if values.get("service") else []
        query += [("scope", one) for one in values.get("scope", "").split() if one]
        auth = (self.username, self.password or "") if self.username is not None else None
        try:
            # The realm the registry names gets the credentials; a redirect from it does not.
            resp = self.session.get(realm, params=query, auth=auth, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise errors.RegistryUnavailable(f"token service unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise errors.RegistryAuthFailed(f"token service refused credentials ({resp.status_code})")
        try:
            body = resp.json()
        except ValueError as exc:
            raise errors.RegistryAuthFailed("token service answered without JSON") from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise errors.RegistryAuthFailed("token service answered without a token")
        with self._lock:
            self._tokens[scope] = token

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        ok: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request; authenticate once on 401; map transport failures to RegistryUnavailable."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        for attempt in range(2):
            resp, final = self._follow(method, url, scope, headers or {}, **kwargs)
            if resp.status_code == 401 and attempt == 0 and "WWW-Authenticate" in resp.headers:
                resp.close()
                if origin(final) != self.origin:
                    raise errors.RegistryAuthFailed(
                        f"{final} (not the registry's origin) asked for credentials; none were sent")
                self._authenticate(resp.headers["WWW-Authenticate"], scope)
                continue
            break
        if resp.status_code in ok:
            return resp
        if resp.status_code == 401:
            raise errors.RegistryAuthFailed(f"registry refused credentials for {method} {path}")
        if resp.status_code >= 500:
            raise errors.RegistryUnavailable(f"registry answered {resp.status_code} to {method} {path}",
                                             status=resp.status_code)
        raise _mapped(resp, method, path)

    def _follow(self, method: str, url: str, scope: str, headers: dict[str, str],
                **kwargs: Any) -> tuple[requests.Response, str]:
        """Redirects followed here, not by requests, so each hop gets credentials only on the registry's origin.
        Returns the response and the URL that answered."""
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._send(method, url, headers={**headers, **self._auth_headers(scope, url)},
                              allow_redirects=False, **kwargs)
            if resp.status_code not in _REDIRECTS or "Location" not in resp.headers:
                return resp, url
            resp.close()
            url = urljoin(url, resp.headers["Location"])
            if resp.status_code == 303 or (resp.status_code in (301, 302) and method not in ("GET", "HEAD")):
                method = "GET"
                kwargs.pop("data", None)
        raise errors.RegistryError(f"more than {MAX_REDIRECTS} redirects from the registry ({url})")

    def _environment(self, url: str) -> dict[str, Any]:
        """What requests would take from the environment for `url` (HTTP(S)_PROXY and NO_PROXY, REQUESTS_CA_BUNDLE
        and CURL_CA_BUNDLE), worked out once per origin."""
        key = origin(url)
        found = self._environments.get(key)
        if found is None:
            with requests.Session() as probe:  # trust_env on: requests' own reading of the environment
                merged = probe.merge_environment_settings(url, {}, None, None, None)
            found = {"proxies": merged["proxies"], "verify": merged["verify"]}
            self._environments[key] = found
        return found

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request, retried while the registry is briefly away (a maintenance restart takes about a
        second): reads on any connection error, writes only when the connection was refused outright."""
        deadline = time.monotonic() + self.retry_seconds
        while True:
            try:
                return self.session.request(method, url, timeout=self.timeout, **self._environment(url), **kwargs)
            except requests.ConnectionError as exc:
                if time.monotonic() >= deadline or not _retryable(method, exc):
                    raise errors.RegistryUnavailable(f"registry unreachable at {self.base_url}: {exc}") from exc
            except requests.RequestException as exc:
                raise errors.RegistryUnavailable(f"registry unreachable at {self.base_url}: {exc}") from exc
            time.sleep(0.2)

    # -- read ----------------------------------------------------------------------------------

    def ping(self) -> None:
        self.request("GET", "/v2/", scope="")

    def answered(self, path: str) -> int:
        """The status of one GET of this path, without authenticating (a 401 is an answer too): for a request
        whose only purpose is the line it leaves in the registry's access log."""
        resp = self._send("GET", f"{self.base_url}{path}")
        resp.close()
        return resp.status_code

    def catalog(self, page_size: int = 1000) -> list[str]:
        names: list[str] = []
        url: str | None = f"/v2/_catalog?n={page_size}"
        while url:
            resp = self.request("GET", url, scope="registry:catalog:*", stream=True)
            names.extend(_json_page(resp, "the catalog").get("repositories") or [])
            url = self._next(resp)
        return names

    def tags(self, repository: str) -> list[str]:
        """Tags of a repository; RepositoryNotFound when the registry does not know the name."""
        tags: list[str] = []
        url: str | None = f"/v2/{repository}/tags/list?n=1000"
        while url:
            resp = self.request("GET", url, scope=f"repository:{repository}:pull", stream=True)
            tags.extend(_json_page(resp, f"the tag list of {repository}").get("tags") or [])
            url = self._next(resp)
        return tags

    def _next(self, resp: requests.Response) -> str | None:
        match = _NEXT_LINK.search(resp.headers.get("Link", ""))
        return urljoin(self.base_url + "/", match.group(1)) if match else None

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The stored digest a tag points at (HEAD with every manifest type), None if unknown."""
        try:
            resp = self.request(
                "HEAD", f"/v2/{repository}/manifests/{reference}", scope=f"repository:{repository}:pull",
                headers={"Accept": ACCEPT},
            )
        except errors.NotFound:
            return None
        return resp.headers.get("Docker-Content-Digest")

    def manifest(self, repository: str, reference: str) -> Manifest:
        resp = self.request(
            "GET", f"/v2/{repository}/manifests/{reference}", scope=f"repository:{repository}:pull",
            headers={"Accept": ACCEPT}, stream=True,
        )
        content = read_bounded(resp, MANIFEST_LIMIT, f"manifest {repository}@{reference}")
        digest = resp.headers.get("Docker-Content-Digest") or sha256_digest(content)
        try:
            return parse(content, resp.headers.get("Content-Type"), digest)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise errors.RegistryError(f"manifest {repository}@{reference} is unreadable ({exc}): storage may be "
                                       "damaged", repository=repository, reference=reference) from exc

    def blob(self, repository: str, digest: str, limit: int = CONFIG_LIMIT) -> bytes:
        """A small blob (an image config), read streamed and abandoned past `limit` bytes."""
        resp = self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull",
                            stream=True)
        return read_bounded(resp, limit, f"blob {repository}@{digest}")

    def blob_exists(self, repository: str, digest: str) -> bool:
        try:
            self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull")
        except errors.NotFound:
            return False
        return True

    def image_config(self, repository: str, digest: str) -> dict[str, Any]:
        return json.loads(self.blob(repository, digest))

    # -- write ---------------------------------------------------------------------------------

    def delete_manifest(self, repository: str, reference: str) -> None:
        self.request(
            "DELETE", f"/v2/{repository}/manifests/{reference}", scope=f"repository:{repository}:delete", ok=(202, 200)
        )

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        resp = self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", scope=f"repository:{repository}:pull,push",
            ok=(201,), headers={"Content-Type": media_type}, data=body,
        )
        return resp.headers.get("Docker-Content-Digest") or sha256_digest(body)

    def push_blob(self, repository: str, data: bytes) -> str:
        """Monolithic upload (POST then PUT), skipped when the registry already has the blob."""
        digest = sha256_digest(data)
        if self.blob_exists(repository, digest):
            return digest
        scope = f"repository:{repository}:pull,push"
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, ok=(202,))
        location = urljoin(self.base_url + "/", start.headers["Location"])
        sep = "&" if "?" in location else "?"
        self.request(
            "PUT", f"{location}{sep}digest={digest}", scope=scope, ok=(201,),
            headers={"Content-Type": "application/octet-stream"}, data=data,
        )
        return digest


def _json_page(resp: requests.Response, what: str) -> dict[str, Any]:
    try:
        body = json.loads(read_bounded(resp, LIST_LIMIT, what))
    except ValueError as exc:
        raise errors.RegistryError(f"{what} is not JSON: {exc}") from exc
    return body if isinstance(body, dict) else {}


def _mapped(resp: requests.Response, method: str, path: str) -> errors.JanitorError:
    code = _error_code(resp)
    where = f"{method} {path}"
    if resp.status_code == 404:
        if code == "NAME_UNKNOWN":
            return errors.RepositoryNotFound(f"repository unknown to the registry ({where})")
        if code == "BLOB_UNKNOWN":
            return errors.NotFound(f"blob unknown to the registry ({where})")
        return errors.ManifestNotFound(f"manifest unknown to the registry ({where})")
    if resp.status_code == 405:
        if method == "DELETE":
            return errors.DeleteDisabled(
                "the registry refuses deletes (405 UNSUPPORTED): enable them with storage.delete.enabled: true "
                "in its config.yml or REGISTRY_STORAGE_DELETE_ENABLED=true in its environment, then restart it",
            )
        return errors.RegistryError(f"the registry refuses writes ({where}: 405 {code}); is it in read-only mode?", status=405)
    return errors.RegistryError(f"registry answered {resp.status_code} {code} to {where}", status=resp.status_code, code=code)
