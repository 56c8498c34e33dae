"""The generated functions (engine.mapping.codegen) do what the interpreter does, and say where they come from.

A tracking run keeps the interpreter (its closures record what they read), so it is the oracle here: each
message is mapped both ways and the Bundles and warnings must be equal — also for value specs the shipped
mappings do not use in their hot fields (a list for one value, a join of numbers, a table with a default,
``when:`` on a value, a non-typed value for ``value[x]``)."""

from __future__ import annotations

import textwrap
import traceback
from pathlib import Path

import pytest

from engine.errors import MappingError
from engine.mapping import map_message
from engine.mapping.registry import Registry, default_registry
from engine.mapping.spec import Fields

HEAD = (
    "MSH|^~\\&|ACME_LIS|ACME|EHR|HOSP|20230209145442||ORU^R01^ORU_R01|C1|P|2.5.1\r"
    "PID|1||123^^^HOSP&1.2.3&ISO^MR||Doe^Jane||19700101|{sex}\r"
    "ORC|RE|P1^EHR|F1^LAB\r"
    "OBR|1|P1^EHR|F1^LAB|GLU^Glucose^99LAB||||||||||||||||||||F\r"
)
OBX = [
    "OBX|1|NM|GLU^Glucose^99LAB||5.4|mmol/L^mmol/L^UCUM|3.9-5.5|N|||F\r",
    "OBX|2|SN|CRP^CRP^99LAB|7|<^0.5|mg/L|<5|H~L|||C|||20230209\r",
    'OBX|3|ST|K^Potassium^99LAB|""|||||||X|||2023XX09\r',
    "OBX|4|CWE|X\\S\\1^Esc^L|a^b|POS^Positive^L|^|||||F|||\r",
]

SITE = """\
    mapping: t
    extends: oru-r01
    match: {message: ORU, events: [R01], sender: {application: ACME_LIS}}
    resources:
      patient:
        fields:
          gender: {path: PID-8, table: sex, default: unknown}
      observation:
        fields:
          status: [{path: OBX-11, table: observation-status}, {value: final}]
          effectiveDateTime: {first_of: [[OBX-14, OBR-7], OBR-8]}
          note:
            - {fields: {text: {join: [OBX-1, OBX-4, {value: 7}, OBX-3.1], sep: "-"}}}
            - {when: {equals: [OBX-2, SN]}, fields: {text: {value: signed}}}
          device: {ref: device, display: analyzer}
      other_observation:
        fields:
          value[x]: {path: OBX-5, as: string}
"""


def _site(tmp_path: Path) -> Registry:
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "sex.yaml").write_text(
        "tables:\n  sex:\n    map: {M: male, F: female}\n    unmapped: error\n"
    )
    (tmp_path / "hl7v2").mkdir()
    (tmp_path / "hl7v2" / "t.yaml").write_text(textwrap.dedent(SITE))
    return Registry([tmp_path])


def _outcome(raw: bytes, registry: Registry, track: bool) -> object:
    try:
        result = map_message(raw, registry=registry, track=track)
    except MappingError as exc:
        return ("failed", str(exc), [(i.message, i.location) for i in exc.issues])
    return result.bundle, [(i.message, i.location, i.severity) for i in result.issues]


@pytest.mark.parametrize("sex", ["F", "Z", "", '""', "F^x", "M~F"])
def test_generated_code_gives_what_the_interpreter_gives(tmp_path: Path, sex: str) -> None:
    registry = _site(tmp_path)
    raw = (HEAD.format(sex=sex) + "".join(OBX)).encode()
    generated = _outcome(raw, registry, track=False)
    assert generated == _outcome(raw, registry, track=True)
    if sex == "Z":  # a code the table lacks, and no default for it: the table's own error
        assert generated[0] == "failed" and "not in table 'sex'" in generated[1]  # type: ignore[index]


def test_generated_source_names_the_mapping_file_and_its_lines() -> None:
    mapping = default_registry().get("oru-r01")
    block = next(b for b in mapping.blocks if b.name == "observation")
    assert isinstance(block.fields, Fields)
    build = block.fields.builder()
    assert build.__code__.co_filename.startswith("<mapping mappings/hl7v2/oru_r01.yaml:")
    source = build.source  # type: ignore[attr-defined]
    assert "# status (mappings/hl7v2/oru_r01.yaml:" in source
    assert "r.block = 'patient'" in source  # the subject reference, made in line
    assert block.fields.builder() is build  # made once


def test_an_error_raised_in_generated_code_keeps_its_location(tmp_path: Path) -> None:
    registry = _site(tmp_path)
    raw = (HEAD.format(sex="Z") + OBX[0]).encode()
    with pytest.raises(MappingError) as caught:
        map_message(raw, registry=registry)
    # the error the table closure makes, naming the mapping line of ``table:``
    assert caught.value.issues[0].location is not None
    assert caught.value.issues[0].location.startswith("(")
    assert "t.yaml:" in caught.value.issues[0].location
    frames = [f.filename for f in traceback.extract_tb(caught.value.__traceback__)]
    assert any(name.startswith("<mapping ") and "t.yaml:" in name for name in frames)
