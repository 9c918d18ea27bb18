"""Protected tags from the command line: `protections` lists the rules, `protect NAME --repositories GLOB...
--tags REGEX` makes (or replaces) one, `unprotect NAME` removes one. Registered on the main group by cli/main.py."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from cli.client import ApiError
from cli.common import emit_json, json_option


def _emit(c: Any, data: Any, table: Table | None = None, line: str | None = None) -> None:
    if c.json:
        emit_json(data)
    elif table is not None:
        c.out.print(table)
    if line and not c.json:
        c.out.print(line)


def protections_table(items: list[dict[str, Any]]) -> Table:
    table = Table("Rule", "Repositories", "Tags (RE2, searched)", "Source",
                  title=f"{len(items)} protection rule{'' if len(items) == 1 else 's'}")
    for rule in items:
        table.add_row(rule["name"], ", ".join(rule.get("repositories") or []), rule.get("tags", ""),
                      rule.get("source", ""))
    return table


@click.command("protections")
@json_option
@click.pass_obj
def protections(c: Any) -> None:
    """Protection rules: the tags no deletion, policy or window removes (from the API and PROTECTIONS_FILE)."""
    items = c.client.protections()
    _emit(c, items, protections_table(items))


@click.command("protect")
@click.argument("name")
@click.option("--repositories", "-r", "globs", multiple=True, required=True, metavar="GLOB",
              help="Repository glob, as in policies: * within a path segment, ** across (repeatable, or "
                   "comma-separated).")
@click.option("--tags", "-t", "pattern", required=True, metavar="REGEX",
              help="RE2 regular expression, searched: anchor it (^v\\d+\\.\\d+\\.\\d+$) to match whole tags.")
@json_option
@click.pass_obj
def protect(c: Any, name: str, globs: tuple[str, ...], pattern: str) -> None:
    """Protect the tags REGEX matches in the repositories GLOB names, under rule NAME (scope admin).

    A rule of that name made through the API is replaced; one from PROTECTIONS_FILE is changed there.
    """
    body = {"name": name, "repositories": [g.strip() for item in globs for g in item.split(",") if g.strip()],
            "tags": pattern}
    try:
        rule, did = c.client.protection_create(body), "created"
    except ApiError as exc:
        if exc.code != "PROTECTION_EXISTS":
            raise
        rule, did = c.client.protection_replace(name, body), "replaced"
    _emit(c, rule, protections_table([rule]), f"protection rule {name} {did}")


@click.command("unprotect")
@click.argument("name")
@json_option
@click.pass_obj
def unprotect(c: Any, name: str) -> None:
    """Remove protection rule NAME (scope admin): the tags it protected may be deleted again."""
    c.client.protection_delete(name)
    _emit(c, {"name": name, "deleted": True}, None, f"protection rule {name} removed")


COMMANDS = (protections, protect, unprotect)
