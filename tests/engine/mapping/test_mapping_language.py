"""The mapping language: loading (file:line errors), extends and per-sender overrides, tables and
ConceptMaps, Z segments, named functions, events, converters."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from engine.errors import ConfigurationError, MappingError
from engine.mapping import map_message
from engine.mapping.functions import register
from engine.mapping.registry import Registry

ORU = (
    "MSH|^~\\&|ACME_LIS|ACME|EHR|HOSP|20230209145442||ORU^R01^ORU_R01|C1|P|2.5.1\r"
    "PID|1||123^^^HOSP&1.2.3&ISO^MR||Doe^Jane^Q^^Dr^^L||19700101|F\r"
    "ORC|RE|P1^EHR|F1^LAB\r"
    "OBR|1|P1^EHR|F1^LAB|GLU^Glucose^99LAB||||||||||||||||||||F\r"
    "OBX|1|NM|GLU^Glucose^99LAB||5.4|mmol/L^mmol/L^UCUM|3.9-5.5|N|||F\r"
    "OBX|2|SN|CRP^CRP^99LAB||<^0.5|mg/L|<5||||C\r"
    "OBX|3|ST|K^Potassium^99LAB||||||||X\r"
    "ZPI|1|DOG^Dog^L\r"
)


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def observations(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]


def test_shipped_oru_maps_values_statuses_and_structure():
    result = map_message(ORU.encode())
    assert result.mapping == "oru-r01" and result.version
    bundle = result.bundle
    assert bundle["type"] == "transaction"
    glu, crp, k = observations(bundle)
    assert glu["valueQuantity"] == {
        "value": 5.4,
        "unit": "mmol/L",
        "system": "http://unitsofmeasure.org",
        "code": "mmol/L",
    }
    assert (
        glu["referenceRange"][0]["low"]["value"] == 3.9 and glu["referenceRange"][0]["high"]["value"] == 5.5
    )
    assert glu["interpretation"][0]["coding"][0]["code"] == "N"
    assert crp["valueQuantity"]["comparator"] == "<" and crp["valueQuantity"]["value"] == 0.5
    assert crp["status"] == "corrected"
    assert k["status"] == "cancelled" and "valueString" not in k and k["dataAbsentReason"]
    for entry in bundle["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:")
        if entry["resource"]["resourceType"] != "Provenance":
            assert entry["request"]["method"] in ("PUT", "POST")
    patient = bundle["entry"][0]
    assert patient["request"] == {"method": "PUT", "url": "Patient?identifier=urn:oid:1.2.3|123"}
    report = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    obs_urls = {e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"}
    assert {r["reference"] for r in report["result"]} == obs_urls
    provenance = bundle["entry"][-1]["resource"]
    assert provenance["resourceType"] == "Provenance"
    assert "oru-r01" in provenance["agent"][0]["who"]["display"]
    assert provenance["entity"][0]["what"]["identifier"]["value"] == "C1"


def test_same_message_gives_the_same_bundle():
    assert map_message(ORU.encode()).bundle == map_message(ORU.encode()).bundle


def test_unknown_element_fails_at_load_with_file_and_line(tmp_path: Path):
    write(
        tmp_path,
        "hl7v2/bad.yaml",
        """\
        mapping: bad
        match: {message: ORU, events: [R01]}
        resources:
          patient:
            type: Patient
            fields:
              identifer: PID-3
        """,
    )
    with pytest.raises(ConfigurationError, match=r"hl7v2/bad.yaml:7: Patient has no element 'identifer'"):
        Registry([tmp_path])


def test_bad_path_and_unknown_converter_name_their_line(tmp_path: Path):
    write(
        tmp_path,
        "hl7v2/bad.yaml",
        "mapping: bad\nresources:\n  p:\n    type: Patient\n    fields:\n      name: PID.5\n",
    )
    with pytest.raises(ConfigurationError, match=r"bad.yaml:6: invalid field path"):
        Registry([tmp_path])
    write(
        tmp_path,
        "hl7v2/bad.yaml",
        "mapping: bad\nresources:\n  p:\n    type: Patient\n    fields:\n      name: {path: PID-5, as: XYZ}\n",
    )
    with pytest.raises(ConfigurationError, match=r"bad.yaml:6: unknown converter 'XYZ'"):
        Registry([tmp_path])


SITE = """\
    mapping: acme-oru
    version: "7"
    extends: oru-r01
    match: {message: ORU, events: [R01], sender: {application: "ACME_*", facility: ACME}}
    timezone: "+01:00"
    systems: {"HOSP": "urn:oid:9.9.9"}
    segments:
      ZPI:
        fields:
          2: {name: pet, type: CWE}
    resources:
      observation:
        fields:
          code: {path: OBX-3, translate: acme-lab, unmapped: keep}
          note:
            - {fields: {text: {function: shout, args: [OBX-3.2]}}}
      pet:
        type: Observation
        segment: ZPI
        identity: {system: {value: "urn:acme:pet"}, value: ZPI-1}
        fields:
          status: {value: final}
          code: ZPI-2
          subject: {ref: patient}
    """


@register("shout")
def _shout(ctx, values):  # a site's named function
    return values[0].text().upper() + "!" if values else None


def site(tmp_path: Path) -> Registry:
    write(tmp_path, "hl7v2/acme.yaml", SITE)
    write(
        tmp_path,
        "conceptmaps/acme-lab.yaml",
        """\
        conceptmap: acme-lab
        target_system: http://loinc.org
        map:
          - {source: GLU, target: 2345-7, display: Glucose}
        """,
    )
    return Registry([tmp_path])


def test_per_sender_override_extends_and_is_chosen_for_that_sender(tmp_path: Path):
    reg = site(tmp_path)
    result = map_message(ORU.encode(), registry=reg)
    assert (result.mapping, result.version) == ("acme-oru", "7")
    glu = observations(result.bundle)[0]
    assert glu["code"]["coding"][0] == {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}
    assert glu["code"]["coding"][1]["code"] == "GLU"  # the local code is kept beside the translation
    assert glu["note"] == [{"text": "GLUCOSE!"}]
    pet = [o for o in observations(result.bundle) if o["code"].get("text") == "Dog"]
    assert pet and pet[0]["code"]["coding"][0]["code"] == "DOG"  # ZPI-2 declared CWE: CodeableConcept
    other = ORU.replace("ACME_LIS|ACME", "OTHER|ELSEWHERE")
    assert map_message(other.encode(), registry=reg).mapping == "oru-r01"


def test_site_timezone_and_authority_systems(tmp_path: Path):
    reg = site(tmp_path)
    bundle = map_message(ORU.replace("HOSP&1.2.3&ISO", "HOSP").encode(), registry=reg).bundle
    patient = bundle["entry"][0]["resource"]
    assert patient["identifier"][0]["system"] == "urn:oid:9.9.9"
    assert bundle["entry"][-1]["resource"]["recorded"] == "2023-02-09T14:54:42+01:00"


def test_unmapped_error_names_the_field_and_the_mapping_line(tmp_path: Path):
    write(
        tmp_path,
        "hl7v2/strict.yaml",
        """\
        mapping: strict
        extends: oru-r01
        match: {message: ORU, events: [R01], sender: {application: ACME_LIS}}
        resources:
          observation:
            fields:
              code: {path: OBX-3, translate: acme-lab, unmapped: error}
        """,
    )
    write(
        tmp_path,
        "conceptmaps/acme-lab.csv",
        "source_code,target_code,target_system,target_display\nGLU,2345-7,http://loinc.org,Glucose\n",
    )
    reg = Registry([tmp_path])
    with pytest.raises(MappingError) as caught:
        map_message(ORU.encode(), registry=reg)
    locations = [i.location for i in caught.value.issues]
    assert any(loc.startswith("OBX[2]-3") and "strict.yaml:7" in loc for loc in locations), locations


def test_fhir_conceptmap_json_and_default(tmp_path: Path):
    cm = {
        "resourceType": "ConceptMap",
        "name": "lab-json",
        "group": [
            {
                "source": "urn:conduit:codesystem:99LAB",
                "target": "http://loinc.org",
                "element": [{"code": "CRP", "target": [{"code": "1988-5", "equivalence": "equivalent"}]}],
                "unmapped": {"mode": "fixed", "code": "LA4489-6"},
            }
        ],
    }
    write(tmp_path, "conceptmaps/lab-json.json", json.dumps(cm))
    write(
        tmp_path,
        "hl7v2/j.yaml",
        """\
        mapping: j
        extends: oru-r01
        match: {message: ORU, events: [R01], sender: {application: ACME_LIS}}
        resources:
          observation:
            fields:
              code: {path: OBX-3, translate: lab-json}
        """,
    )
    obs = observations(map_message(ORU.encode(), registry=Registry([tmp_path])).bundle)
    assert obs[1]["code"]["coding"][0]["code"] == "1988-5"
    assert obs[0]["code"]["coding"][0]["code"] == "LA4489-6"  # unmapped: the ConceptMap's fixed default


def test_table_with_unmapped_error(tmp_path: Path):
    write(
        tmp_path,
        "tables/strict.yaml",
        "tables:\n  sex:\n    map: {M: male, F: female}\n    unmapped: error\n",
    )
    write(
        tmp_path,
        "hl7v2/t.yaml",
        """\
        mapping: t
        extends: oru-r01
        match: {message: ORU, events: [R01], sender: {application: ACME_LIS}}
        resources:
          patient:
            fields:
              gender: {path: PID-8, table: sex}
        """,
    )
    reg = Registry([tmp_path])
    assert map_message(ORU.encode(), registry=reg).bundle["entry"][0]["resource"]["gender"] == "female"
    with pytest.raises(MappingError, match="not in table 'sex'"):
        map_message(ORU.replace("|19700101|F", "|19700101|Z").encode(), registry=reg)


def test_no_mapping_for_the_message_is_a_mapping_error():
    with pytest.raises(MappingError, match="no mapping for QRY\\^A19"):
        map_message(b"MSH|^~\\&|A|B|||20230101||QRY^A19|1|P|2.5\r")
    with pytest.raises(MappingError):
        map_message(b"not hl7 at all")


def test_bad_value_is_left_out_with_a_located_warning():
    result = map_message(ORU.replace("||5.4|", "||five|").encode())
    assert "valueQuantity" not in observations(result.bundle)[0]
    assert any(i.location.startswith("OBX[1]-5 (mappings/hl7v2/oru_r01.yaml:") for i in result.issues)


def test_extends_cycle_and_unknown_parent(tmp_path: Path):
    write(tmp_path, "hl7v2/a.yaml", "mapping: a\nextends: b\n")
    write(tmp_path, "hl7v2/b.yaml", "mapping: b\nextends: a\n")
    with pytest.raises(ConfigurationError, match="extends cycle"):
        Registry([tmp_path])
    (tmp_path / "hl7v2/b.yaml").unlink()
    with pytest.raises(ConfigurationError, match="extends unknown mapping 'b'"):
        Registry([tmp_path])


def test_explicit_null_removes_the_element():
    msg = ORU.replace("||19700101|F", '||""|""').replace("Doe^Jane^Q^^Dr^^L", '""')
    patient = map_message(msg.encode()).bundle["entry"][0]["resource"]
    assert "gender" not in patient and "birthDate" not in patient and "name" not in patient
