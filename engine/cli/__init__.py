"""The ``conduit`` command line.

Each module in this package that defines ``register(app: typer.Typer)`` adds its commands or command
group; modules are discovered, so a new area adds a file here and touches nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="conduit",
    help="Conduit: a FHIR R4 / HL7 v2 / DICOM integration engine.\n\n"
    "Start everything with `conduit serve`; see `conduit COMMAND --help` for each command.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    app()
