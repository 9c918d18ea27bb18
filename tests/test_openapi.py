"""The checked-in openapi/openapi.json is what the app serves at /openapi.json."""

from __future__ import annotations

import json
import subprocess
import sys
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
