"""``conduit map``: try mappings on messages (and DICOM studies) before they meet production traffic.

conduit map test MESSAGE_FILE|DICOM_FILE|DICOM_DIR [--mapping NAME] [--expect EXPECTED.json] [--json]
                 [--input NAME=VALUE]
conduit map run DIR [--mapping NAME]
conduit map list
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from engine.cli._common import err, fail, out

map_app = typer.Typer(
    help="Mappings (HL7 v2 -> FHIR R4, DICOM study -> FHIR R4): test, run over a folder, list.",
    no_args_is_help=True,
)

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


DICOM_DEFAULT = "dicom-imaging-study"

_TEST_HELP = (
    "Map one input, validate every resource fully, list what the mapping did not read, and diff against "
    "an expected Bundle (ids, fullUrls, meta and Provenance.recorded ignored). Exits non-zero on any error."
    "\n\n"
    "The input is an HL7 v2 message (or batch) file; or a DICOM Part 10 file (recognised by its 'DICM' "
    "prefix, whatever its name) or a folder of them holding ONE study, run through the DICOM mapping "
    "dicom-imaging-study (or --mapping). The study is presented as the PACS sync presents it: only the "
    "attributes the PACS index keeps (mappings/dicom/README.md), taken as if the files were stored in name "
    "order. input.patient and input.order are not looked up (no database): give them with --input "
    "patient=Patient/123."
    "\n\n"
    "'Not used by the mapping' lists the presented keywords the mapping never refers to (anywhere in its "
    "file, conditions included: a reference in a branch not taken counts as used), then the header's other "
    "keywords, which no DICOM mapping can read in production. A keyword the mapping refers to that the PACS "
    "does not keep is a warning."
    "\n\n"
    "Examples: conduit map test msg.hl7 --expect msg.json | conduit map test study/ --input "
    "patient=Patient/1 --json"
)


@map_app.command("test", help=_TEST_HELP)
def test(
    message_file: Path = typer.Argument(
        ..., help="An HL7 v2 message (or batch) file, a DICOM Part 10 file, or a folder of DICOM files."
    ),
    mapping: str | None = typer.Option(None, "--mapping", "-m", help="Use this mapping instead of choosing."),
    expect: Path | None = typer.Option(None, "--expect", help="Expected Bundle JSON to diff against."),
    as_json: bool = typer.Option(False, "--json", help="Print only the Bundle JSON on stdout."),
    mapping_dir: list[Path] = typer.Option([], "--dir", help="Extra mapping directory (repeatable)."),
    inputs: list[str] = typer.Option(
        [], "--input", help="DICOM only: a value the PACS would resolve, NAME=VALUE (patient=Patient/1)."
    ),
) -> None:
    registry = _registry(mapping_dir)
    if message_file.is_dir() or is_part10(message_file):
        bundles, failed = _test_dicom(message_file, registry, mapping, _inputs(inputs), as_json)
    else:
        if inputs:
            raise fail("--input is for DICOM studies (an HL7 message carries its own values)", 2)
        bundles, failed = _test_hl7(message_file, registry, mapping, as_json)
    if as_json and bundles:
        typer.echo(json.dumps(bundles[0] if len(bundles) == 1 else bundles, indent=2, ensure_ascii=False))
    if expect is not None and bundles:
        try:
            expected = json.loads(expect.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read {expect}: {exc}", 2) from exc
        patch = bundle_diff(expected, bundles[0])
        if patch:
            err.print(f"[red]{len(patch)} difference(s) from {escape(str(expect))}:[/red]")
            for op in patch[:200]:
                err.print(
                    escape(
                        f"  {op['op']} {op['path']}"
                        + (f" = {json.dumps(op.get('value'))[:200]}" if "value" in op else "")
                    )
                )
            failed = True
        else:
            err.print(f"[green]matches {escape(str(expect))}[/green]")
    if failed:
        raise typer.Exit(1)


def is_part10(path: Path) -> bool:
    from engine.mapping.dicom_files import is_part10 as check

    return check(path)


def _inputs(pairs: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise fail(f"--input takes NAME=VALUE, not {pair!r}", 2)
        out[name.strip()] = value.strip() or None
    return out


def _test_hl7(path: Path, registry: Any, mapping: str | None, as_json: bool) -> tuple[list[Any], bool]:
    from engine.errors import MappingError
    from engine.mapping import map_message

    failed = False
    bundles = []
    for n, raw in enumerate(_messages(path), 1):
        try:
            result = map_message(raw, mapping=mapping, registry=registry, track=True)
        except MappingError as exc:
            err.print(f"[red]message {n}: {escape(exc.message)}[/red]")
            for issue in exc.issues:
                err.print(escape(f"  {issue.location or ''}: {issue.message}"))
            failed = True
            continue
        bundles.append(result.bundle)
        head = f"message {n}: {result.message_type} -> mapping [bold]{result.mapping}[/bold] {result.version}"
        errors = _report(head, result.bundle, result.issues, lambda issue: issue.location or "")
        if result.unused:
            err.print(f"  not used by the mapping: {', '.join(result.unused)}")
        failed = failed or bool(errors)
        if not as_json:
            out.print_json(json.dumps(result.bundle))
    return bundles, failed


def _report(head: str, bundle: dict[str, Any], issues: list[Any], locate: Callable[[Any], str]) -> list[Any]:
    """Print what one mapping run gave (``head``: what was mapped by which mapping, markup allowed): the
    entry count, every resource's validation errors, the warnings located by ``locate``; returns the
    validation errors."""
    from engine.mapping.validate import validate_bundle

    errors = validate_bundle(bundle)
    err.print(
        f"{head}: {len(bundle['entry'])} entries, {len(errors)} validation error(s), {len(issues)} warning(s)"
    )
    for issue in errors:
        err.print(f"  [red]invalid[/red] {escape(f'{issue.location}: {issue.message}')}")
    for issue in issues:
        err.print(f"  [yellow]warning[/yellow] {escape(f'{locate(issue)}: {issue.message}')}")
    return errors


def _dicom_mapping(registry: Any, name: str | None) -> Any:
    chosen = registry.dicom.get(name or DICOM_DEFAULT)
    if chosen is None or chosen.abstract:
        known = ", ".join(sorted(n for n, m in registry.dicom.items() if not m.abstract)) or "none"
        raise fail(f"no DICOM mapping named {name or DICOM_DEFAULT!r} (DICOM mappings: {known})", 2)
    return chosen


def _test_dicom(
    path: Path, registry: Any, mapping: str | None, inputs: dict[str, str | None], as_json: bool
) -> tuple[list[Any], bool]:
    from engine.errors import InvalidInput, MappingError
    from engine.mapping.dicom import run_study
    from engine.mapping.dicom_files import part10_files, read_study
    from engine.mapping.dicom_study import PRESENTED

    files = part10_files(path) if path.is_dir() else [path]
    if not files:
        raise fail(
            f"{escape(str(path))}: no DICOM Part 10 file in this folder (none starts with the 'DICM' prefix); "
            "for a folder of HL7 v2 messages, use conduit map run",
            2,
        )
    chosen = _dicom_mapping(registry, mapping)
    try:
        study = read_study(files, inputs=inputs)
    except InvalidInput as exc:
        raise fail(escape(exc.message), 2) from exc
    for note in study.notes:
        err.print(f"  [yellow]note[/yellow] {escape(note)}")
    tree = study.study.tree
    uid = tree.attributes.get("StudyInstanceUID", "")
    try:
        output = run_study(chosen, study.study)
    except MappingError as exc:
        err.print(f"[red]study {escape(uid)}: {escape(exc.message)}[/red]")
        for issue in exc.issues:
            err.print(escape(f"  {study.locate(issue)}: {issue.message}"))
        return [], True
    head = (
        f"study {escape(uid)}: {len(study.files)} file(s), {len(tree.children)} series -> mapping "
        f"[bold]{chosen.name}[/bold] {chosen.version}"
    )
    errors = _report(head, output.bundle, output.issues, study.locate)
    presentable = {k for level in PRESENTED.values() for k in level}
    for keyword in sorted(chosen.reads - presentable):
        err.print(
            f"  [yellow]warning[/yellow] the mapping reads {keyword}, which the PACS index does not keep: "
            "it is always empty"
        )
    unused = sorted(study.presented() - chosen.reads)
    if unused:
        err.print(f"  not used by the mapping: {', '.join(unused)}")
    hidden = sorted(set(study.header) - presentable)
    if hidden:
        err.print(
            f"  in the files but not presented to DICOM mappings ({len(hidden)}, not kept by the PACS "
            f"index): {', '.join(hidden)}"
        )
    if not as_json:
        out.print_json(json.dumps(output.bundle))
    return [output.bundle], bool(errors)


_HL7_SUFFIXES = (".hl7", ".txt", ".er7")


@map_app.command("run")
def run(
    folder: Path = typer.Argument(
        ...,
        help="A folder of HL7 v2 message files (*.hl7, *.txt, *.er7) and/or DICOM Part 10 files (any name, "
        "recognised by their 'DICM' prefix), searched recursively.",
    ),
    mapping: str | None = typer.Option(
        None,
        "--mapping",
        "-m",
        help="Use this mapping: an HL7 mapping for every message, or a DICOM mapping for every study "
        "(the other kind keeps its default).",
    ),
    mapping_dir: list[Path] = typer.Option([], "--dir", help="Extra mapping directory (repeatable)."),
) -> None:
    """Map every message of a folder, validating fully; a progress bar, then a summary table. DICOM files
    are grouped by StudyInstanceUID and each study is mapped once (dicom-imaging-study unless --mapping
    names a DICOM mapping), as the PACS sync would; other files are left alone."""
    from rich.progress import Progress
    from rich.table import Table

    from engine.errors import InvalidInput, MappingError
    from engine.mapping import map_message
    from engine.mapping.dicom import run_study
    from engine.mapping.dicom_files import group_by_study, read_study
    from engine.mapping.validate import validate_bundle

    if not folder.is_dir():
        raise fail(f"{folder} is not a folder", 2)
    registry = _registry(mapping_dir)
    dicom_name = mapping if mapping in registry.dicom else None
    hl7_name = None if dicom_name else mapping
    candidates = sorted(p for p in folder.rglob("*") if p.is_file())
    files = [p for p in candidates if p.suffix.lower() in _HL7_SUFFIXES]
    dicom_files = [p for p in candidates if p.suffix.lower() not in _HL7_SUFFIXES and is_part10(p)]
    rows: list[tuple[str, str, str, int, int, str]] = []
    errors_total = 0
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("mapping", total=len(files) + len(dicom_files))
        for path in files:
            for n, raw in enumerate(_messages(path), 1):
                name = str(path.relative_to(folder)) + (f" #{n}" if n > 1 else "")
                try:
                    result = map_message(raw, mapping=hl7_name, registry=registry)
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
                    rows.append((name, "", "", 0, 0, f"[red]{escape(exc.message[:80])}[/red]"))
            progress.advance(task)
        if dicom_files:
            chosen = _dicom_mapping(registry, dicom_name)
            studies, problems = group_by_study(dicom_files)
            for path, why in problems:
                errors_total += 1
                rows.append(
                    (str(path.relative_to(folder)), "DICOM", "", 0, 0, f"[red]{escape(why[:80])}[/red]")
                )
                progress.advance(task)
            for uid, paths in studies.items():
                common = Path(os.path.commonpath(paths)).relative_to(folder) if len(paths) > 1 else None
                if common is None or common == Path("."):  # one file, or files in several folders
                    more = f" +{len(paths) - 1}" if len(paths) > 1 else ""
                    name = f"{paths[0].relative_to(folder)}{more} (study {uid}, {len(paths)} file(s))"
                else:
                    name = f"{common} (study {uid}, {len(paths)} file(s))"
                try:
                    output = run_study(chosen, read_study(paths).study)
                    invalid = validate_bundle(output.bundle)
                    status = "[green]ok[/green]" if not invalid else f"[red]{len(invalid)} invalid[/red]"
                    errors_total += bool(invalid)
                    rows.append(
                        (name, "DICOM", chosen.name, len(output.bundle["entry"]), len(output.issues), status)
                    )
                except (MappingError, InvalidInput) as exc:
                    errors_total += 1
                    rows.append((name, "DICOM", chosen.name, 0, 0, f"[red]{escape(exc.message[:80])}[/red]"))
                progress.advance(task, len(paths))
    table = Table(title=f"{len(rows)} message(s) or stud(y/ies) in {escape(str(folder))}")
    for column in ("file", "type", "mapping", "entries", "warnings", "result"):
        table.add_column(column)
    for row in rows:
        table.add_row(escape(row[0]), row[1], row[2], str(row[3]), str(row[4]), row[5])
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
