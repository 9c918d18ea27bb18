"""A real token service for a registry that uses bearer-token auth (the Docker registry token protocol).

GET /token?service=...&scope=... with HTTP basic auth for one user answers a JWT signed ES256 by a
self-signed certificate, which the registry trusts through REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE: the
certificate rides in the token's `x5c` header, so distribution verifies the chain and then the signature.
Every scope asked for is granted. Each grant is recorded, so tests can see who asked for what.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_scope(scope: str) -> dict[str, Any]:
    """`repository:team/app:pull,push` -> {type, name, actions}; the name may hold colons (host:port/x)."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        raise ValueError(f"bad scope {scope!r}")
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


@dataclass
class Grant:
    user: str
    service: str
    scopes: list[str]


@dataclass
class TokenServer:
    username: str
    password: str
    service: str = "rj-test-registry"
    issuer: str = "rj-test-token-issuer"
    ttl: int = 300
    host: str = "127.0.0.1"
    grants: list[Grant] = field(default_factory=list)
    refusals: int = 0

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry-janitor test token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                status, body = server.answer(self.path, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="rj-test-token"')
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="token-server", daemon=True)

    @property
    def realm(self) -> str:
        return f"http://{self.host}:{self.port}/token"

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write_cert(self, directory: Path) -> Path:
        path = directory / "cert.pem"
        path.write_bytes(self.cert_pem())
        return path

    def registry_env(self, cert_path_in_container: str = "/certs/cert.pem") -> dict[str, str]:
        return {"REGISTRY_AUTH": "token", "REGISTRY_AUTH_TOKEN_REALM": self.realm,
                "REGISTRY_AUTH_TOKEN_SERVICE": self.service, "REGISTRY_AUTH_TOKEN_ISSUER": self.issuer,
                "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE": cert_path_in_container}

    def start(self) -> TokenServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the protocol ----------------------------------------------------------------------------

    def answer(self, path: str, authorization: str) -> tuple[int, dict[str, Any]]:
        url = urlsplit(path)
        if url.path != "/token":
            return 404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]}
        user = self._user(authorization)
        if user is None:
            with self._lock:
                self.refusals += 1
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        query = parse_qs(url.query)
        service = (query.get("service") or [""])[0]
        if service != self.service:
            return 400, {"errors": [{"code": "DENIED", "message": f"unknown service {service!r}"}]}
        # The protocol sends one `scope` parameter per scope; a space-separated list is accepted too.
        scopes = [s for value in query.get("scope", []) for s in value.split()]
        try:
            access = [parse_scope(s) for s in scopes]
        except ValueError as exc:
            return 400, {"errors": [{"code": "DENIED", "message": str(exc)}]}
        token = self.issue(user, access)
        with self._lock:
            self.grants.append(Grant(user, service, scopes))
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        return 200, {"token": token, "access_token": token, "expires_in": self.ttl, "issued_at": now}

    def _user(self, authorization: str) -> str | None:
        kind, _, value = authorization.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user if (user, password) == (self.username, self.password) else None

    def issue(self, subject: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + self.ttl, "nbf": now - 5,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def scopes_granted(self) -> set[str]:
        with self._lock:
            return {s for g in self.grants for s in g.scopes}


class TokenAuth(requests.auth.AuthBase):
    """requests auth for test clients (pushers, pullers): on a 401 with a Bearer challenge, fetch a token
    for the challenged scope from the realm with basic auth and resend once. Tokens are cached by scope;
    the first request to each endpoint pays a 401."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.tokens: dict[str, str] = {}
        self._last: dict[tuple[str, str], str] = {}  # (method, url path) -> scope last challenged

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        scope = self._last.get((r.method or "", urlsplit(r.url or "").path))
        if scope is not None and scope in self.tokens:
            r.headers["Authorization"] = f"Bearer {self.tokens[scope]}"
        r.register_hook("response", self._handle_401)
        return r

    def _handle_401(self, resp: requests.Response, **kwargs: Any) -> requests.Response:
        challenge = resp.headers.get("WWW-Authenticate", "")
        if resp.status_code != 401 or not challenge.lower().startswith("bearer ") \
                or getattr(resp.request, "_rj_retried", False):
            return resp
        params = dict(_param.split("=", 1) for _param in _split_challenge(challenge[len("bearer "):]))
        params = {k: v.strip('"') for k, v in params.items()}
        scope = params.get("scope", "")
        query: list[tuple[str, str]] = [("service", params.get("service", ""))]
        query += [("scope", s) for s in scope.split()]
        got = requests.get(params["realm"], params=query, auth=(self.username, self.password), timeout=30)
        if got.status_code != 200:
            return resp
        self.tokens[scope] = got.json()["token"]
        req = resp.request
        self._last[(req.method or "", urlsplit(req.url or "").path)] = scope
        resp.content  # noqa: B018 (drain the connection before reusing it)
        resp.close()
        retry = req.copy()
        retry.headers["Authorization"] = f"Bearer {self.tokens[scope]}"
        retry._rj_retried = True  # type: ignore[attr-defined]
        sent = resp.connection.send(retry, **kwargs)
        sent.history.append(resp)
        sent.request = retry
        return sent


def _split_challenge(params: str) -> list[str]:
    """Split `a="x,y",b="z"` on the commas outside quotes."""
    parts, cur, quoted = [], "", False
    for ch in params:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def token_session(username: str, password: str) -> requests.Session:
    session = requests.Session()
    session.auth = TokenAuth(username, password)
    return session
