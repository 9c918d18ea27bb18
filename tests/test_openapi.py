"""The checked-in openapi/openapi.json is what the app serves at /openapi.json."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED_IN = ROOT / "openapi" / "openapi.json"
REGENERATE = ".venv/bin/python scripts/gen_openapi.py"


@pytest.fixture(scope="module")
def served() -> dict[str, Any]:
    """The spec, from the same script that writes the file, in a fresh interpreter: create_app() builds a
    new app each time, and other tests' apps must not change (or be changed by) this one."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_openapi.py"), "--print"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"scripts/gen_openapi.py --print failed:\n{out.stderr[-3000:]}"
    return json.loads(out.stdout)


def test_checked_in_spec_matches_the_app(served: dict[str, Any]) -> None:
    assert CHECKED_IN.exists(), f"openapi/openapi.json is missing; generate it with: {REGENERATE}"
    checked_in = json.loads(CHECKED_IN.read_text())
    changed = sorted(set(checked_in.get("paths", {})) ^ set(served.get("paths", {})))
    assert checked_in == served, (
        "openapi/openapi.json differs from what the app serves at /openapi.json"
        + (f" (paths added or removed: {changed})" if changed else "")
        + f"; regenerate it with: {REGENERATE}"
    )


def test_spec_documents_the_api(served: dict[str, Any]) -> None:
    expected = {"/v1/repositories", "/v1/repositories/{name}/tags", "/v1/deletions", "/v1/jobs/{job_id}",
                "/v1/gc", "/healthz", "/readyz"}
    assert expected <= set(served["paths"]), f"undocumented endpoints: {sorted(expected - set(served['paths']))}"


# --- What the document says, operation by operation (issue 10) ------------------------------------------------

OPERATION_IDS = {
    ("/v1/repositories", "get"): "listRepositories",
    ("/v1/repositories/{name}/tags", "get"): "listTags",
    ("/v1/deletions", "post"): "createDeletion",
    ("/v1/jobs/{job_id}", "get"): "getJob",
    ("/v1/gc", "post"): "createGc",
    ("/healthz", "get"): "getHealth",
    ("/readyz", "get"): "getReadiness",
}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
CAMEL_CASE = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)*$")
SOURCES = [ROOT / d for d in ("janitor", "service", "worker")]


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def test_every_operation_has_a_camel_case_id_a_summary_and_a_description(served: dict[str, Any]) -> None:
    """New endpoints need `@blp.doc(operationId="camelCase", summary=..., description=...)`."""
    seen: dict[str, str] = {}
    for path, method, op in operations(served):
        where = f"{method.upper()} {path}"
        op_id = op.get("operationId", "")
        assert CAMEL_CASE.match(op_id), f"{where}: operationId {op_id!r} is missing or not camelCase; add " \
            '@blp.doc(operationId="camelCase", summary="...", description="...")'
        assert op_id not in seen, f"{where} and {seen[op_id]} share operationId {op_id}"
        seen[op_id] = where
        assert op.get("summary", "").strip(), f"{where} has no summary"
        assert op.get("description", "").strip(), f"{where} has no description"
    for (path, method), op_id in OPERATION_IDS.items():
        assert served["paths"][path][method].get("operationId") == op_id, f"{method.upper()} {path} must be {op_id}"


def test_every_status_an_operation_answers_is_listed_with_the_error_schema(served: dict[str, Any]) -> None:
    for path, method, op in operations(served):
        where, responses = f"{method.upper()} {path}", op["responses"]
        assert "default" not in responses, f"{where}: list the statuses, not a catch-all default"
        wanted = set()
        if path.startswith("/v1/") and op.get("security") != []:
            wanted.add("401")
        if "requestBody" in op:
            wanted |= {"400", "413", "422"}
        if any(p["in"] == "query" for p in op.get("parameters", [])):
            wanted |= {"414", "422"}
        if "{" in path:
            wanted.add("414")
        assert wanted <= set(responses), f"{where} does not list {sorted(wanted - set(responses))}"
        for status, response in responses.items():
            if int(status) >= 400 and path != "/readyz":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, f"{where} {status} is not an Error"
    statuses = {op["operationId"]: set(op["responses"]) for _, _, op in operations(served)}
    assert {"404", "409", "502", "503"} <= statuses["createDeletion"]
    assert {"502", "503"} <= statuses["listRepositories"] and {"404", "502", "503"} <= statuses["listTags"]
    assert {"404", "503"} <= statuses["getJob"] and "503" in statuses["createGc"]
    assert "REGISTRY_DELETE_DISABLED" in served["paths"]["/v1/deletions"]["post"]["responses"]["502"]["description"]


def test_accepted_and_created_answers_document_location(served: dict[str, Any]) -> None:
    found = 0
    for path, method, op in operations(served):
        for status in set(op["responses"]) & {"201", "202"}:
            found += 1
            assert "Location" in op["responses"][status].get("headers", {}), f"{method.upper()} {path} {status}"
    assert found >= 2


def test_request_bodies_have_examples(served: dict[str, Any]) -> None:
    for path, method, op in operations(served):
        if "requestBody" in op:
            media = op["requestBody"]["content"]["application/json"]
            assert "example" in media or media.get("examples"), f"{method.upper()} {path} has no example"


def test_times_are_date_time_and_nullable_objects_are_typed(served: dict[str, Any]) -> None:
    schemas = served["components"]["schemas"]
    for name, schema in schemas.items():
        for prop, value in schema.get("properties", {}).items():
            if prop.endswith("_at") or prop in ("at", "created"):
                assert value.get("format") == "date-time", f"{name}.{prop} is not format: date-time"
    # OpenAPI 3.1 nullable refs: generated clients see JobError and Window, not an empty object.
    job = schemas["Job"]["properties"]
    assert job["error"]["anyOf"] == [{"$ref": "#/components/schemas/JobError"}, {"type": "null"}]
    assert job["window"]["anyOf"] == [{"$ref": "#/components/schemas/Window"}, {"type": "null"}]
    assert served["openapi"].startswith("3.1")


def test_info_version_is_the_package_version(served: dict[str, Any]) -> None:
    assert served["info"]["version"] == metadata.version("registry-janitor")


def test_every_schema_is_used(served: dict[str, Any]) -> None:
    text = json.dumps(served["paths"])
    used, pending = set(), [n for n in served["components"]["schemas"] if f"#/components/schemas/{n}\"" in text]
    while pending:
        name = pending.pop()
        if name not in used:
            used.add(name)
            body = json.dumps(served["components"]["schemas"][name])
            pending += re.findall(r'#/components/schemas/([A-Za-z0-9_]+)"', body)
    assert set(served["components"]["schemas"]) == used, f"unused: {set(served['components']['schemas']) - used}"
    assert "PaginationMetadata" not in served["components"]["schemas"]


def test_the_deletion_body_states_its_rules(served: dict[str, Any]) -> None:
    deletion = served["components"]["schemas"]["Deletion"]
    props = deletion["properties"]
    assert "exactly one of" in deletion["description"] and deletion["additionalProperties"] is False
    assert re.search(props["repository"]["pattern"], "team/app") and not re.search(props["repository"]["pattern"],
                                                                                  "Team/App")
    assert re.search(props["tags"]["items"]["pattern"], "v1.0") and not re.search(props["tags"]["items"]["pattern"],
                                                                                   "-bad")
    assert re.search(props["digests"]["items"]["pattern"], "sha256:" + "0" * 64)
    assert props["tags"]["minItems"] == 1 and props["tags"]["maxItems"] == 100


def sent_codes() -> dict[str, str]:
    """Every error code literal in the source, found where a code is set: `code = "X"` (a JanitorError
    subclass), `code="X"`, `{"code": "X"}`, CODE_BY_STATUS's values, error_response(status, "X", ...), and
    the OTHER_* constants. code -> where it was found."""
    found: dict[str, str] = {}

    def add(node: ast.AST, where: str) -> None:
        """A literal, or a literal among alternatives (`code or "X"`) or in a tuple of them."""
        parts = node.values if isinstance(node, ast.BoolOp) else getattr(node, "elts", [node])
        for const in parts:
            if isinstance(const, ast.Constant) and isinstance(const.value, str):
                found.setdefault(const.value, where)

    for src in (f for d in SOURCES for f in d.rglob("*.py")):
        tree, rel = ast.parse(src.read_text()), src.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = {t.id for t in targets if isinstance(t, ast.Name)}
                if node.value is not None and names & {"code", "OTHER_CODES", "OTHER_HTTP_CODE"}:
                    add(node.value, f"{rel}:{node.lineno}")
                if node.value is not None and "CODE_BY_STATUS" in names and isinstance(node.value, ast.Dict):
                    for value in node.value.values:
                        add(value, f"{rel}:{node.lineno}")
            elif isinstance(node, ast.keyword) and node.arg == "code":
                add(node.value, f"{rel}:{node.value.lineno}")
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "code":
                        add(value, f"{rel}:{value.lineno}")
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == \
                    "error_response" and len(node.args) >= 2:
                add(node.args[1], f"{rel}:{node.lineno}")
    return found


def test_error_code_is_an_enum_of_every_code_the_service_sends(served: dict[str, Any]) -> None:
    from janitor import errors

    def classes(cls: type) -> list[type]:
        return [cls, *(c for sub in cls.__subclasses__() for c in classes(sub))]

    schemas = served["components"]["schemas"]
    enum = set(schemas["ErrorCode"]["enum"])
    found = sent_codes()
    assert {"TAG_UNKNOWN", "INTERRUPTED", "BODY_TOO_LARGE", "NO_WORKER"} <= set(found), "the scan finds nothing"
    missing = {code: where for code, where in found.items() if code not in enum}
    assert not missing, f"codes sent but not in Error.code's enum (add them to janitor/errors.py): {missing}"
    assert {cls.code for cls in classes(errors.JanitorError)} <= enum
    for name in ("Error", "JobError", "Check"):  # one enum, so a generated client has one ErrorCode type
        assert schemas[name]["properties"]["code"]["$ref"] == "#/components/schemas/ErrorCode"


def test_a_query_parameter_given_twice_is_refused() -> None:
    from janitor.config.settings import Settings
    from service import create_app

    client = create_app(Settings()).test_client()
    for url in ("/v1/repositories?page=1&page=x", "/v1/repositories?page=1&page=2",
                "/v1/repositories/team/app/tags?page_size=5&page_size=6"):
        resp = client.get(url)
        assert resp.status_code == 422, (url, resp.get_json())
        assert resp.get_json()["code"] == "INVALID_REQUEST" and resp.get_json()["details"]
