"""``conduit map``: try mappings on messages before they meet production traffic.

conduit map test MESSAGE_FILE [--mapping NAME] [--expect EXPECTED.json] [--json]
conduit map run DIR [--mapping NAME]
conduit map list
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from engine.cli._common import err, fail, out

map_app = typer.Typer(help="HL7 v2 -> FHIR R4 mappings: test, run over a folder, list.", no_args_is_help=True)

__all__ = ["register", "normalize", "bundle_diff"]


def register(app: typer.Typer) -> None:
    app.add_typer(map_app, name="map")


def _registry(dirs: list[Path] | None) -> Any:
    from engine.errors import ConfigurationError
    from engine.mapping.registry import Registry
    from engine.mapping.settings import MappingSettings

    settings = MappingSettings()
    try:
        return Registry(list(settings.dirs) + list(dirs or []), timezone=settings.timezone)
    except ConfigurationError as exc:
        raise fail(str(exc), 2) from exc


def _messages(path: Path) -> list[bytes]:
    from engine.hl7v2.batch import split_batch

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}", 2) from exc
    return split_batch(data)


def normalize(bundle: dict[str, Any]) -> dict[str, Any]:
    """A bundle with its volatile parts made comparable: ``urn:uuid:``/server ids replaced by the type and
    rank of the entry they name, ``meta``, ``id`` and ``Provenance.recorded`` dropped, entries sorted."""
    names: dict[str, str] = {}
    counts: dict[str, int] = {}
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        kind = resource.get("resourceType", "?")
        counts[kind] = counts.get(kind, 0) + 1
        label = f"{kind}#{counts[kind]}"
        if entry.get("fullUrl"):
            names[entry["fullUrl"]] = label
        if resource.get("id"):
            names[f"{kind}/{resource['id']}"] = label

    def walk(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items() if k not in ("meta", "id", "recorded", "fullUrl")}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if key == "reference" and isinstance(node, str):
            return names.get(node, node)
        return node

    entries = [walk(e) for e in bundle.get("entry", [])]
    entries.sort(key=lambda e: json.dumps(e.get("resource", {}), sort_keys=True))
    return {"resourceType": "Bundle", "type": bundle.get("type"), "entry": entries}


def bundle_diff(expected: dict[str, Any], actual: dict[str, Any]) -> list[dict[str, Any]]:
    import jsonpatch

    return list(jsonpatch.make_patch(normalize(expected), normalize(actual)))


@map_app.command("test")
def test(
    message_file: Path = typer.Argument(..., help="An HL7 v2 message (or batch) file."),
    mapping: str | None = typer.Option(None, "--mapping", "-m", help="Use this mapping instead of choosing."),
    expect: Path | None = typer.Option(None, "--expect", help="Expected Bundle JSON to diff against."),
    as_json: bool = typer.Option(False, "--json", help="Print only the Bundle JSON on stdout."),
    mapping_dir: list[Path] = typer.Option([], "--dir", help="Extra mapping directory (repeatable)."),
) -> None:
    """Map one message file, validate every resource fully, list what the mapping did not read, and diff
    against an expected Bundle. Exits non-zero on any error."""
    from engine.errors import MappingError
    from engine.mapping import map_message
    from engine.mapping.validate import validate_bundle

    registry = _registry(mapping_dir)
    failed = False
    bundles = []
    for n, raw in enumerate(_messages(message_file), 1):
        try:
            result = map_message(raw, mapping=mapping, registry=registry, track=True)
        except MappingError as exc:
            err.print(f"[red]message {n}: {exc.message}[/red]")
            for issue in exc.issues:
                err.print(f"  {issue.location or ''}: {issue.message}")
            failed = True
            continue
        bundles.append(result.bundle)
        errors = validate_bundle(result.bundle)
        err.print(
            f"message {n}: {result.message_type} -> mapping [bold]{result.mapping}[/bold] {result.version}: "
            f"{len(result.bundle['entry'])} entries, {len(errors)} validation error(s), "
            f"{len(result.issues)} warning(s)"
        )
        for issue in errors:
            err.print(f"  [red]invalid[/red] {issue.location}: {issue.message}")
        for issue in result.issues:
            err.print(f"  [yellow]warning[/yellow] {issue.location or ''}: {issue.message}")
        if result.unused:
            err.print(f"  not used by the mapping: {', '.join(result.unused)}")
        failed = failed or bool(errors)
        if not as_json:
            out.print_json(json.dumps(result.bundle))
    if as_json and bundles:
        typer.echo(json.dumps(bundles[0] if len(bundles) == 1 else bundles, indent=2, ensure_ascii=False))
    if expect is not None and bundles:
        try:
            expected = json.loads(expect.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read {expect}: {exc}", 2) from exc
        patch = bundle_diff(expected, bundles[0])
        if patch:
            err.print(f"[red]{len(patch)} difference(s) from {expect}:[/red]")
            for op in patch[:200]:
                err.print(
                    f"  {op['op']} {op['path']}"
                    + (f" = {json.dumps(op.get('value'))[:200]}" if "value" in op else "")
                )
            failed = True
        else:
            err.print(f"[green]matches {expect}[/green]")
    if failed:
        raise typer.Exit(1)


@map_app.command("run")
def run(
    folder: Path = typer.Argument(
        ..., help="A folder of HL7 v2 message files (*.hl7, *.txt, searched recursively)."
    ),
    mapping: str | None = typer.Option(None, "--mapping", "-m", help="Use this mapping for every message."),
    mapping_dir: list[Path] = typer.Option([], "--dir", help="Extra mapping directory (repeatable)."),
) -> None:
    """Map every message of a folder, validating fully; a progress bar, then a summary table."""
    from rich.progress import Progress
    from rich.table import Table

    from engine.errors import MappingError
    from engine.mapping import map_message
    from engine.mapping.validate import validate_bundle

    if not folder.is_dir():
        raise fail(f"{folder} is not a folder", 2)
    registry = _registry(mapping_dir)
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in (".hl7", ".txt", ".er7") and p.is_file()
    )
    rows: list[tuple[str, str, str, int, int, str]] = []
    errors_total = 0
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("mapping", total=len(files))
        for path in files:
            for n, raw in enumerate(_messages(path), 1):
                name = str(path.relative_to(folder)) + (f" #{n}" if n > 1 else "")
                try:
                    result = map_message(raw, mapping=mapping, registry=registry)
                    invalid = validate_bundle(result.bundle)
                    status = "[green]ok[/green]" if not invalid else f"[red]{len(invalid)} invalid[/red]"
                    errors_total += bool(invalid)
                    rows.append(
                        (
                            name,
                            result.message_type,
                            result.mapping,
                            len(result.bundle["entry"]),
                            len(result.issues),
                            status,
                        )
                    )
                except MappingError as exc:
                    errors_total += 1
                    rows.append((name, "", "", 0, 0, f"[red]{exc.message[:80]}[/red]"))
            progress.advance(task)
    table = Table(title=f"{len(rows)} message(s) in {folder}")
    for column in ("file", "type", "mapping", "entries", "warnings", "result"):
        table.add_column(column)
    for row in rows:
        table.add_row(row[0], row[1], row[2], str(row[3]), str(row[4]), row[5])
    out.print(table)
    out.print(f"{len(rows) - errors_total} mapped, {errors_total} failed")
    if errors_total:
        raise typer.Exit(1)


@map_app.command("list")
def list_mappings(
    mapping_dir: list[Path] = typer.Option([], "--dir", help="Extra mapping directory."),
) -> None:
    """The mappings in force: name, version, what they match, their file."""
    from rich.table import Table

    registry = _registry(mapping_dir)
    table = Table(title="mappings")
    for column in ("name", "version", "message", "events", "sender", "file"):
        table.add_column(column)
    for name, m in sorted(registry.mappings.items()):
        if m.abstract:
            continue
        sender = "^".join(x for x in (m.match.application or "", m.match.facility or "") if x) or "*"
        table.add_row(
            name,
            m.version,
            ",".join(sorted(m.match.message)),
            ",".join(sorted(m.match.events)),
            sender,
            m.file,
        )
    for name, m in sorted(registry.outbound.items()):
        table.add_row(name, m.version, "FHIR -> " + m.message_type, "", "", m.file)
    for name, m in sorted(registry.dicom.items()):
        if not m.abstract:
            table.add_row(name, m.version, "DICOM study", "", "", m.file)
    out.print(table)
