#!/usr/bin/env python3
"""Regenerate openapi/openapi.json from the app: what `GET /openapi.json` serves, pretty and sorted.

    .venv/bin/python scripts/gen_openapi.py          # rewrite openapi/openapi.json
    .venv/bin/python scripts/gen_openapi.py --check  # exit 1 if the checked-in file is stale
    .venv/bin/python scripts/gen_openapi.py --print  # write the spec to stdout instead
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "openapi" / "openapi.json"
COMMAND = ".venv/bin/python scripts/gen_openapi.py"

sys.path.insert(0, str(ROOT))


def served_spec() -> dict[str, Any]:
    """The spec the app serves, from default settings (no Redis, registry or Docker is contacted)."""
    from janitor.config.settings import Settings
    from service import create_app

    logging.getLogger("service").setLevel(logging.ERROR)  # the "API_TOKENS is not set" warning
    app = create_app(Settings())
    resp = app.test_client().get("/openapi.json")
    if resp.status_code != 200:
        raise RuntimeError(f"GET /openapi.json answered {resp.status_code}: {resp.get_data(as_text=True)[:500]}")
    return resp.get_json()


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only compare; exit 1 if the file is stale")
    mode.add_argument("--print", action="store_true", help="write the spec to stdout, not to the file")
    args = parser.parse_args()
    text = render(served_spec())
    if args.print:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale; run: {COMMAND}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
