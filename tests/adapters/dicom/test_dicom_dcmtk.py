"""The SCP against DCMTK's own command-line tools (a real peer nobody here wrote), over loopback."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicom_corpus import make_corpus, uid
from dicom_support import dcmtk, movescu, needs_dcmtk, pending_count
from pydicom.data import get_testdata_file

pytestmark = [needs_dcmtk, pytest.mark.dcmtk]

#: pydicom's own test files (all ship offline with pydicom), one per SOP class / transfer syntax family,
#: with the storescu option that makes DCMTK propose the file's own transfer syntax (without it storescu
#: proposes only uncompressed syntaxes and converts or fails)
SAMPLES = {
    "CT_small.dcm": None,  # CT, explicit VR little endian
    "MR_small_implicit.dcm": None,  # implicit VR little endian
    "rtplan.dcm": None,  # RT Plan, no pixels
    "test-SR.dcm": None,  # structured report
    "image_dfl.dcm": "-xd",  # deflated explicit VR little endian
    "MR_small_RLE.dcm": "-xr",  # RLE lossless
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",  # JPEG baseline (process 1)
    "JPEG-lossy.dcm": "-xx",  # JPEG extended (process 2 & 4, 12 bit)
    "MR_small_jpeg_ls_lossless.dcm": "-xt",  # JPEG-LS lossless
    "MR_small_jp2klossless.dcm": "-xv",  # JPEG 2000 lossless
}


def _storescu(port: int, *files: Path | str, aec: str = "CONDUIT", propose: str | None = None) -> Any:
    options = [propose] if propose else []
    return dcmtk(
        "storescu", "-v", *options, "-aet", "TESTSCU", "-aec", aec, "127.0.0.1", str(port), *map(str, files)
    )


def _findscu(port: int, *keys: str, root: str = "-S") -> Any:
    args = ["findscu", "-v", root, "-aet", "TESTSCU", "-aec", "CONDUIT"]
    for key in keys:
        args += ["-k", key]
    return dcmtk(*args, "127.0.0.1", str(port))


def test_echo_and_wrong_called_ae(scp: Any) -> None:
    ok = dcmtk("echoscu", "-v", "-aec", "CONDUIT", "127.0.0.1", str(scp.port))
    assert ok.returncode == 0, ok.stderr
    wrong = dcmtk("echoscu", "-v", "-aec", "NOTCONDUIT", "127.0.0.1", str(scp.port))
    assert wrong.returncode != 0
    assert "called ae title not recognized" in (wrong.stdout + wrong.stderr).lower()


def test_store_samples_as_received(scp: Any, runtime: Any, tmp_path: Path) -> None:
    files = []
    for name, option in SAMPLES.items():
        source = get_testdata_file(name, download=False)
        assert source, name
        # several MR_small variants share one SOP Instance UID: give each copy its own (encoding untouched)
        ds = pydicom.dcmread(source)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("sample", name)
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        result = _storescu(scp.port, path, propose=option)
        out = result.stdout + result.stderr
        assert "Received Store Response (Success)" in out, out
        for line in out.splitlines():
            if "Converting transfer syntax:" in line:  # DCMTK logs X -> X when it sends as is
                before, after = line.split(":", 2)[-1].split("->")
                assert before.strip() == after.strip(), line
    pacs = runtime.port("pacs")
    for path in files:
        original = pydicom.dcmread(path, stop_before_pixels=True)
        outcome = pacs.retrieve(
            "study",
            _ident(
                "IMAGE", SOPInstanceUID=original.SOPInstanceUID, StudyInstanceUID=original.StudyInstanceUID
            ),
        )
        [ref] = outcome.instances
        stored = pydicom.dcmread(pacs.storage.path(ref.storage_key))
        # the object is kept in the transfer syntax it arrived in, not transcoded
        assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID, path.name
        if "PixelData" in original:
            assert stored.PixelData == pydicom.dcmread(path).PixelData, path.name


def _ident(level: str, **keys: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


@pytest.fixture
def loaded(scp: Any, tmp_path: Path) -> Any:
    plan = make_corpus(tmp_path / "corpus", count=24)
    result = _storescu(scp.port, *plan.files)
    assert (result.stdout + result.stderr).count("(Success)") == 24
    return plan


def test_find_answers_more_matches_than_are_queued_quietly(scp: Any, loaded: Any) -> None:
    # 24 IMAGE-level matches: more than the C-FIND matches the association thread queues before it
    # wakes the DUL thread (_MAX_HELD), each sent as one P-DATA of command and identifier
    r = _findscu(
        scp.port,
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={loaded.studies[0]['StudyInstanceUID']}\\"
        + "\\".join(s["StudyInstanceUID"] for s in loaded.studies[1:]),
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "PatientName",
    )
    output = r.stdout + r.stderr
    assert r.returncode == 0, r.stderr
    assert pending_count(output) == 24
    assert len(re.findall(r"#\s*\d+, 1 SOPInstanceUID", output)) == 24  # every match with its identifier


def test_find_levels_roots_wildcards_and_ranges(scp: Any, loaded: Any) -> None:
    port = scp.port
    # patient root, PATIENT level
    r = _findscu(port, "QueryRetrieveLevel=PATIENT", "PatientID", "PatientName=doe*", root="-P")
    assert pending_count(r.stdout + r.stderr) == 1, r.stderr
    assert "DOE^" in r.stdout + r.stderr
    # study root, STUDY level: universal
    r = _findscu(
        port, "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID", "NumberOfStudyRelatedInstances"
    )
    assert pending_count(r.stdout + r.stderr) == 6
    # single value + date range
    r = _findscu(
        port,
        "QueryRetrieveLevel=STUDY",
        "PatientID=PAT0001",
        "StudyDate=20240101-20240331",
        "StudyInstanceUID",
    )
    assert pending_count(r.stdout + r.stderr) == 1  # studies 2 and 3 are dated 0303 and 0404
    r = _findscu(port, "QueryRetrieveLevel=STUDY", "StudyDate=-20240202", "StudyInstanceUID")
    assert pending_count(r.stdout + r.stderr) == 2
    r = _findscu(port, "QueryRetrieveLevel=STUDY", "StudyDate=20240505-", "StudyInstanceUID")
    assert pending_count(r.stdout + r.stderr) == 2
    # wildcard with ?
    r = _findscu(port, "QueryRetrieveLevel=STUDY", "AccessionNumber=ACC00000?2", "StudyInstanceUID")
    assert pending_count(r.stdout + r.stderr) == 1
    # UID list at SERIES level (study root)
    studies = loaded.studies
    uids = "\\".join(s["StudyInstanceUID"] for s in studies[:2])
    r = _findscu(
        port, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={uids}", "SeriesInstanceUID", "Modality"
    )
    assert pending_count(r.stdout + r.stderr) == 4
    # IMAGE level, patient root with the unique keys above
    first = loaded.series[0]
    r = _findscu(
        port,
        "QueryRetrieveLevel=IMAGE",
        "PatientID=PAT0000",
        f"StudyInstanceUID={first['StudyInstanceUID']}",
        f"SeriesInstanceUID={first['SeriesInstanceUID']}",
        "SOPInstanceUID",
        "InstanceNumber",
        root="-P",
    )
    assert pending_count(r.stdout + r.stderr) == 2
    # modality at SERIES level
    r = _findscu(port, "QueryRetrieveLevel=SERIES", "Modality=MR", "SeriesInstanceUID")
    assert pending_count(r.stdout + r.stderr) == 6
    # ModalitiesInStudy at STUDY level
    r = _findscu(port, "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=CT", "StudyInstanceUID")
    assert pending_count(r.stdout + r.stderr) == 6


def test_move_to_storescp_and_unknown_destination(
    start_scp: Any, runtime: Any, storescp: tuple[int, Path], tmp_path: Path
) -> None:
    port, out = storescp
    scp = start_scp(remotes=f"STORESCP@127.0.0.1:{port}")
    plan = make_corpus(tmp_path / "corpus", count=8, patients=1)
    assert _storescu(scp.port, *plan.files).stderr.count("(Success)") == 8
    study = plan.studies[0]["StudyInstanceUID"]
    text = movescu(scp.port, "STORESCP", study, debug=True)
    final = text.split("Received Final Move Response")[1]
    assert "0x0000: Success" in final, final
    assert re.search(r"Completed Suboperations\s*:\s*4\b", final), final
    assert re.search(r"Failed Suboperations\s*:\s*0\b", final), final
    received = [p for p in out.rglob("*") if p.is_file()]
    assert len(received) == 4
    sent = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in received}
    assert sent <= set(plan.sop_instance_uids)
    unknown = movescu(scp.port, "NOBODY", study)
    # 0xA801 Refused: Move Destination unknown (PS3.4 C.4.2.1.5), in DCMTK's words
    assert "Refused: MoveDestinationUnknown" in unknown


def test_get_into_getscu(scp: Any, tmp_path: Path) -> None:
    plan = make_corpus(tmp_path / "corpus", count=6, patients=1, studies_per_patient=1)
    _storescu(scp.port, *plan.files)
    target = tmp_path / "got"
    target.mkdir()
    r = dcmtk(
        "getscu",
        "-v",
        "-S",
        "-aet",
        "TESTSCU",
        "-aec",
        "CONDUIT",
        "-od",
        str(target),
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"SeriesInstanceUID={plan.series[0]['SeriesInstanceUID']}",
        "127.0.0.1",
        str(scp.port),
    )
    got = sorted(p for p in target.iterdir() if p.is_file())
    assert len(got) == 3, r.stdout + r.stderr
    for path in got:
        ds = pydicom.dcmread(path)
        assert ds.SeriesInstanceUID == plan.series[0]["SeriesInstanceUID"]


def test_malformed_object_fails_without_crash(scp: Any, tmp_path: Path) -> None:
    # a valid file meta but a dataset whose SOP Instance UID is a path traversal attempt
    src = get_testdata_file("CT_small.dcm", download=False)
    ds = pydicom.dcmread(src)
    with warnings.catch_warnings():  # pydicom may warn about the invalid UI value we mean to send
        warnings.simplefilter("ignore")
        ds.SOPInstanceUID = "1.2.3/../../etc"
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3/../../etc"
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad, enforce_file_format=True)
    r = _storescu(scp.port, bad)
    text = r.stdout + r.stderr
    [response] = [line for line in text.splitlines() if "Received Store Response" in line]
    assert "Success" not in response, text
    assert "Error" in response or "Failed" in response or "Refused" in response, response
    assert not list(Path(scp.pacs.storage.root).rglob("etc*"))
    # the association is still served: the next object stores fine
    good = _storescu(scp.port, src)
    assert "(Success)" in good.stdout + good.stderr
