"""Clients generated from the document work the first time: a Python client made by openapi-python-client from
the document the live service serves runs a real flow, and TypeScript types made by openapi-typescript compile
under `tsc --strict` (where Node is installed)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from tests import images
from tests.conftest import ROOT, Stack

# The generator commands docs/api.md gives ("Generated clients"); pinned in pyproject's test extra and here.
PYTHON_GENERATOR = ["openapi-python-client", "generate", "--meta", "none"]
TS_PACKAGES = ["openapi-typescript@7.13.0", "typescript@5.9.3"]


def generate_python_client(spec_url: str, workdir: Path) -> Path:
    """`openapi-python-client generate --url <served document> --meta none --output-path <dir>/<package>`."""
    package = f"rj_client_{uuid.uuid4().hex[:8]}"
    bindir = str(Path(sys.executable).parent)  # the generator and the ruff it formats with live beside python
    out = subprocess.run([str(Path(bindir) / PYTHON_GENERATOR[0]), *PYTHON_GENERATOR[1:], "--url", spec_url,
                          "--output-path", str(workdir / package)], capture_output=True, text=True, check=False, timeout=300,
                         env={**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")})
    assert out.returncode == 0, out.stdout + out.stderr
    # Warnings mean a piece of the document was skipped: an operation or model the client lacks.
    assert "Warning" not in out.stdout + out.stderr, out.stdout + out.stderr
    return workdir / package


@pytest.fixture
def client_package(stack: Stack, tmp_path: Path) -> Iterator[ModuleType]:
    path = generate_python_client(f"{stack.api}/openapi.json", tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(path.name)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == path.name or m.startswith(path.name + ".")]:
            del sys.modules[name]


def poll(get_job: Any, client: Any, job_id: str, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job.sync(job_id=job_id, client=client)
        if job.status.value in ("succeeded", "failed"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish within {timeout}s")


@pytest.mark.e2e
def test_generated_python_client_runs_a_real_flow(stack: Stack, client_package: ModuleType) -> None:
    pkg = client_package
    api = importlib.import_module(f"{pkg.__name__}.api")
    models = importlib.import_module(f"{pkg.__name__}.models")
    list_repositories = importlib.import_module(f"{api.__name__}.repositories.list_repositories")
    list_tags = importlib.import_module(f"{api.__name__}.repositories.list_tags")
    create_deletion = importlib.import_module(f"{api.__name__}.deletions.create_deletion")
    create_gc = importlib.import_module(f"{api.__name__}.gc.create_gc")
    get_job = importlib.import_module(f"{api.__name__}.jobs.get_job")

    p = stack.pusher()
    old, current = images.image(layers=2), images.image()
    amd = images.image(images.OCI_MANIFEST, platform=("linux", "amd64"))
    arm = images.image(images.OCI_MANIFEST, platform=("linux", "arm64"))
    p.image("team/app", old, "old")
    p.image("team/app", current, "current")
    p.index("team/multi", images.index([amd, arm]), "latest")

    client = pkg.AuthenticatedClient(base_url=stack.api, token=stack.token, timeout=60.0)
    anonymous = pkg.Client(base_url=stack.api)

    # Lists, typed.
    repos = list_repositories.sync(client=client)
    assert isinstance(repos, models.RepositoryPage), repos
    assert {(r.name, r.tag_count) for r in repos.items} == {("team/app", 2), ("team/multi", 1)}
    page = list_repositories.sync(client=client, page=2, page_size=1)
    assert page.page == 2 and [r.name for r in page.items] == ["team/multi"] and page.total == 2
    tags = list_tags.sync(name="team/app", client=client)
    assert isinstance(tags, models.TagPage)
    assert {t.name: t.digest for t in tags.items} == {"old": old.digest, "current": current.digest}
    assert all(isinstance(t.created, datetime) for t in tags.items)

    # A dry run: the plan, nothing changed.
    dry = create_deletion.sync_detailed(client=client, body=models.Deletion(
        repository="team/app", tags=["old"], dry_run=True))
    assert dry.status_code == 202, dry.content
    assert isinstance(dry.parsed, models.Job) and dry.headers["Location"].endswith(f"/v1/jobs/{dry.parsed.id}")
    dry_job = poll(get_job, client, dry.parsed.id)
    assert dry_job.status == models.JobStatus.SUCCEEDED and dry_job.error is None, dry_job
    assert isinstance(dry_job.created_at, datetime)
    assert old.digest in json.dumps(dry_job.result.to_dict())
    assert images.head_manifest(stack.registry.url, "team/app", "old") == 200

    # The real one, polled to the end through the client.
    queued = create_deletion.sync(client=client, body=models.Deletion(repository="team/app", tags=["old"]))
    assert isinstance(queued, models.Job) and queued.kind == models.JobKind.DELETION
    job = poll(get_job, client, queued.id)
    assert job.status == models.JobStatus.SUCCEEDED, job.to_dict()
    assert isinstance(job.window, models.Window) and isinstance(job.window.started_at, datetime)
    assert job.window.write_refused_seconds > 0
    assert [s.name for s in job.steps][:2] == ["preflight", "delete"]
    assert all(s.status == models.StepStatus.SUCCEEDED and isinstance(s.finished_at, datetime) for s in job.steps)
    assert job.result.to_dict()["manifests_deleted"] == [old.digest]
    assert [t.name for t in list_tags.sync(name="team/app", client=client).items] == ["current"]

    # Typed errors: 401, 404, 409, 422.
    refused = list_repositories.sync_detailed(client=anonymous)
    assert refused.status_code == 401 and refused.parsed.code == models.ErrorCode.UNAUTHORIZED
    missing = list_tags.sync_detailed(name="nope", client=client)
    assert missing.status_code == 404 and isinstance(missing.parsed, models.Error)
    assert missing.parsed.code == models.ErrorCode.REPOSITORY_UNKNOWN and missing.parsed.status == 404
    conflict = create_deletion.sync_detailed(client=client, body=models.Deletion(
        repository="team/multi", digests=[amd.digest]))
    assert conflict.status_code == 409 and conflict.parsed.code == models.ErrorCode.REFERENCED_BY_INDEX
    assert conflict.parsed.message
    invalid = create_deletion.sync_detailed(client=client, body=models.Deletion(repository="team/app"))
    assert invalid.status_code == 422 and invalid.parsed.code == models.ErrorCode.INVALID_REQUEST
    assert invalid.parsed.details.to_dict()
    unknown_job = get_job.sync_detailed(job_id="0" * 32, client=client)
    assert unknown_job.status_code == 404 and unknown_job.parsed.code == models.ErrorCode.JOB_UNKNOWN

    # A policy with a warning before its runs (notify_before), typed both ways; a bad one is a typed 422.
    create_policy = importlib.import_module(f"{api.__name__}.policies.create_policy")
    get_policy = importlib.import_module(f"{api.__name__}.policies.get_policy")
    made = create_policy.sync(client=client, body=models.Policy(
        name="warned", repositories=["team/*"], schedule="0 3 * * *", notify_before="24h", enabled=False))
    assert isinstance(made, models.PolicyView) and made.notify_before == "24h" and made.last_upcoming is None
    assert get_policy.sync(name="warned", client=client).notify_before == "24h"
    bad = create_policy.sync_detailed(client=client, body=models.Policy(
        name="unwarned", repositories=["team/*"], notify_before="24h"))
    assert bad.status_code == 422 and bad.parsed.code == models.ErrorCode.INVALID_REQUEST
    assert "notify_before" in bad.parsed.details.to_dict()

    # A failed job says why, typed: the registry container is stopped, so the window fails at preflight.
    stack.registry.container.stop(timeout=1)
    gc = create_gc.sync(client=client, body=models.GcRequest())
    assert isinstance(gc, models.Job) and gc.kind == models.JobKind.GC
    failed = poll(get_job, client, gc.id)
    assert failed.status == models.JobStatus.FAILED
    assert isinstance(failed.error, models.JobError), failed.to_dict()
    assert isinstance(failed.error.code, models.ErrorCode) and failed.error.step == "preflight"
    assert failed.error.code.value == requests.get(f"{stack.api}/v1/jobs/{gc.id}", headers=stack.headers,
                                                   timeout=30).json()["error"]["code"]


USAGE_TS = """\
import type { components, operations, paths } from "./api";

type Job = components["schemas"]["Job"];
type JobError = components["schemas"]["JobError"];
type ErrorBody = components["schemas"]["Error"];

// A failed job's error is a JobError (not an empty object), and a window is a Window.
export function why(job: Job): string {
  const error: JobError | null | undefined = job.error;
  const window: components["schemas"]["Window"] | null | undefined = job.window;
  return error ? `${error.code} in ${error.step ?? "?"}: ${error.message}` : `ok ${window?.id ?? ""}`;
}

// Error.code is the set of codes the service sends.
export const known: ErrorBody["code"] = "REFERENCED_BY_INDEX";
// @ts-expect-error: not a code the service sends
export const unknown: ErrorBody["code"] = "NO_SUCH_CODE";
// @ts-expect-error: not a job status (tsc fails on an @ts-expect-error that finds no error: the check can fail)
export const paused: Job["status"] = "paused";

// The deletion body, the 202 answer with its Location header, and a typed 404 / 409 / 502.
export const body: operations["createDeletion"]["requestBody"]["content"]["application/json"] = {
  repository: "team/app", tags: ["v1"], dry_run: true,
};
type Created = operations["createDeletion"]["responses"][202];
export function follow(created: Created["content"]["application/json"], location: Created["headers"]["Location"]) {
  return created.status === "queued" ? location : created.id;
}
export type Conflict = operations["createDeletion"]["responses"][409]["content"]["application/json"]["code"];
export type RegistryFailed = operations["createDeletion"]["responses"][502]["content"]["application/json"];
export type Page = paths["/v1/repositories"]["get"]["responses"][200]["content"]["application/json"];
export const total = (page: Page): number => page.items.reduce((n, r) => n + r.tag_count, 0);
export type Query = operations["listRepositories"]["parameters"]["query"];

// A policy warned about a day before each run, and the last warning as GET shows it.
export const warned: components["schemas"]["Policy"] = {
  name: "nightly", repositories: ["team/*"], schedule: "0 3 * * *", notify_before: "24h",
};
type LastWarning = NonNullable<components["schemas"]["PolicyView"]["last_upcoming"]>;
export const said = (w: LastWarning): string => `${w.summary} (due ${w.due_at}, ${w.webhooks.length} deliveries)`;
"""


def ts_tools() -> Path:
    """openapi-typescript and typescript, installed once per version set into a cache directory."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "registry-janitor" / (
        "ts-" + "-".join(p.replace("@", "").replace("/", "_") for p in TS_PACKAGES))
    if not (cache / "node_modules" / ".bin" / "tsc").exists():
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "package.json").write_text('{"private": true}\n')
        out = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", *TS_PACKAGES], cwd=cache,
                             capture_output=True, text=True, check=False, timeout=540)
        assert out.returncode == 0, out.stdout + out.stderr
    return cache / "node_modules" / ".bin"


@pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="Node.js is not installed")
def test_generated_typescript_types_compile_strictly(tmp_path: Path) -> None:
    bin_dir = ts_tools()
    spec = tmp_path / "openapi.json"
    spec.write_text((ROOT / "openapi" / "openapi.json").read_text())
    out = subprocess.run([str(bin_dir / "openapi-typescript"), str(spec), "--output", str(tmp_path / "api.d.ts")],
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    types = (tmp_path / "api.d.ts").read_text()
    assert "Record<string, never> | null" not in types
    (tmp_path / "usage.ts").write_text(USAGE_TS)
    tsc = [str(bin_dir / "tsc"), "--strict", "--noEmit", "--target", "es2022", "--module", "nodenext",
           str(tmp_path / "usage.ts")]
    out = subprocess.run(tsc, capture_output=True, text=True, check=False, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
