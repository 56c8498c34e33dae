"""``conduit conformance``: regenerate or check the committed conformance artifacts.

``conduit conformance generate`` writes ``conformance/capability-statement.json`` from the code (the
registered resource types, interactions and search parameters); ``--check`` only compares and exits 1 on
drift. Other areas may add commands to ``conformance_app``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from engine.cli._common import out

__all__ = ["conformance_app", "CAPABILITY_PATH", "render_capability", "register"]

CAPABILITY_PATH = Path(__file__).resolve().parents[2] / "conformance" / "capability-statement.json"

conformance_app = typer.Typer(help="Conformance artifacts generated from the code.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(conformance_app, name="conformance")


def render_capability() -> str:
    """The artifact's exact text: the CapabilityStatement as sorted, indented JSON."""
    from engine.fhir.capability import capability_statement

    statement: dict[str, Any] = capability_statement()
    return json.dumps(statement, indent=2, ensure_ascii=False) + "\n"


@conformance_app.command("generate")
def generate(
    check: bool = typer.Option(
        False, "--check", help="Only compare with the committed file; exit 1 on drift."
    ),
    path: Path = typer.Option(CAPABILITY_PATH, "--path", help="Where the CapabilityStatement is written."),
) -> None:
    """Write conformance/capability-statement.json (FHIR R4 CapabilityStatement) from the code.

    Example: conduit conformance generate --check
    """
    text = render_capability()
    current = path.read_text(encoding="utf-8") if path.exists() else None
    if check:
        if current != text:
            out.print(f"[red]{path} differs from the code[/red]: run `conduit conformance generate`")
            raise typer.Exit(1)
        out.print(f"{path} is current")
        return
    path.write_text(text, encoding="utf-8")
    out.print(f"wrote {path}")
