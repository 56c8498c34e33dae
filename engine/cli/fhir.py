"""``conduit fhir``: offline FHIR tools for integration staff.

``conduit fhir validate FILE...`` checks FHIR R4 JSON files with the same validation that guards the REST
API's create, update and transactions, and prints every problem with its element path.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import typer

from engine.cli._common import out

__all__ = ["fhir_app", "register"]

fhir_app = typer.Typer(help="FHIR R4 tools: validate resource files offline.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(fhir_app, name="fhir")


@fhir_app.command("validate")
def validate(
    files: list[Path] = typer.Argument(..., help="FHIR R4 JSON files (a resource or a Bundle)."),
) -> None:
    """Validate FHIR R4 JSON resources; exit 1 when any file has an error.

    Example: conduit fhir validate patient.json bundle.json
    """
    from engine.fhir.validation import validate_resource

    failed = False
    for path in files:
        try:
            resource = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            out.print(f"[red]{path}[/red]: cannot read JSON: {exc}")
            failed = True
            continue
        issues = validate_resource(resource)
        if not issues:
            out.print(f"[green]{path}[/green]: valid")
            continue
        failed = True
        for issue in issues:
            out.print(f"[red]{path}[/red]: {issue.location or '-'}: {issue.message}", highlight=False)
    if failed:
        raise typer.Exit(1)
