"""An archive that serves hostile and broken data: each bad input is a quarantine row with its reason,
every other record arrives intact, nothing crashes, nothing lands outside the data root.

The demo sky is copied and doctored: a decompression-bomb preview, `../` in a preview URI and in
an obsid, a malformed proposal id, XXE and billion-laughs APT files, a catalog with one record
in broken (non-UTF-8) bytes, and a giant abstract. Then ingest, summarize and build_dataset run
on it, through the real astroquery client and the local archive, and are compared with the
clean reference run.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from storage import DataLayout, ImageStore
from tests.chaos.state import table_rows
from tests.fixtures_archive import archive_configured
from tests.tasks.mast.conftest import ground_truth, ingest_params

pytestmark = pytest.mark.chaos

ESCAPE_NAME = "hubbleclip-chaos-escape"
GIANT_WORDS = 200_000
XXE = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
       b'<HSTProposal Phase2ID="{id}"><ProposalInformation Cycle="15"><Title>t</Title>'
       b'<Abstract>&xxe;</Abstract></ProposalInformation></HSTProposal>')
LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                     for i in range(1, 10))
          + b']><HSTProposal Phase2ID="{id}"><ProposalInformation Cycle="15"><Abstract>&lol9;</Abstract>'
          b'</ProposalInformation></HSTProposal>')


def png_bomb(side: int = 60_000) -> bytes:
    """A 200-byte PNG whose header announces side x side pixels (3.6 G): a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


def _catalog_blocks(text: bytes) -> list[bytes]:
    rule = b"-" * 80
    return text.split(rule)


def doctor_sky(source: Path, target: Path, reference_rows: dict) -> dict:
    """Copy `source` to `target` with one of each hostile input; returns what was done to what."""
    shutil.copytree(source, target)
    truth = ground_truth(source)
    bad = {i for ids in truth["bad_records"].values() for i in ids}
    previews = {r["obsid"]: r for r in reference_rows["previews"]}
    # Victims: ordinary proposals and observations, distinct from the sky's own defects.
    proposals = sorted({r["proposal_id"] for r in reference_rows["proposals"]} - bad, key=int)
    x_xxe, x_laughs, x_giant, x_bytes = proposals[1], proposals[2], proposals[3], proposals[4]
    touched = {x_xxe, x_laughs, x_giant, x_bytes}
    ok = sorted((o for o, r in previews.items() if r["status"] == "ok" and r["proposal_id"] not in touched
                 and o not in bad), key=int)
    o_bomb, o_uri, o_obsid, o_pid = ok[0], ok[3], ok[6], ok[9]

    caom = target / "caom"
    observations = json.loads((caom / "observations.json").read_text())
    files = json.loads((caom / "files.json").read_text())
    fields = observations["fields"] if isinstance(observations["fields"][0], str) else [
        f["name"] for f in observations["fields"]]
    col = {name: i for i, name in enumerate(fields)}

    def cell(row, name):  # rows are dicts or lists, whichever the sky wrote
        return row[name] if isinstance(row, dict) else row[col[name]]

    def set_cell(row, name, value):
        if isinstance(row, dict):
            row[name] = value
        else:
            row[col[name]] = value

    for row in observations["data"]:
        obsid = str(cell(row, "obsid"))
        if obsid == o_bomb:
            (target / files[cell(row, "jpegURL")]).write_bytes(png_bomb())
        elif obsid == o_uri:
            set_cell(row, "jpegURL", f"mast:HST/product/../../../../tmp/{ESCAPE_NAME}_total_drc.jpg")
        elif obsid == o_obsid:
            set_cell(row, "obsid", f"../../../../tmp/{ESCAPE_NAME}")
        elif obsid == o_pid:
            set_cell(row, "proposal_id", "12;DROP TABLE proposals")
    (caom / "observations.json").write_text(json.dumps(observations))

    stsci = target / "stsci"
    blocks = _catalog_blocks((stsci / "catalog.txt").read_bytes())
    kept = []
    for block in blocks:
        ident = next((line.split(b":", 1)[1].strip() for line in block.splitlines() if line.startswith(b"ID:")), b"")
        if ident in (x_xxe.encode(), x_laughs.encode()):
            continue  # no catalog record: the APT file is fetched
        if ident == x_giant.encode():
            lines = block.split(b"\n")
            pi = next(i for i, line in enumerate(lines) if line.startswith(b"PI:"))
            block = b"\n".join(lines[:pi + 1]) + b"\n\n" + b"stars galaxies " * (GIANT_WORDS // 2) + b"\n\n"
        if ident == x_bytes.encode():
            block = block.replace(b"The ", b"The caf\xe9 \xff ", 1)  # Windows-1252 bytes in a UTF-8 file
        kept.append(block)
    (stsci / "catalog.txt").write_bytes((b"-" * 80).join(kept))
    (stsci / "apt" / f"{x_xxe}.apt").write_bytes(XXE.replace(b"{id}", x_xxe.encode()))
    (stsci / "apt" / f"{x_laughs}.apt").write_bytes(LAUGHS.replace(b"{id}", x_laughs.encode()))
    for pid in (x_xxe, x_laughs):
        (stsci / "pro" / f"{pid}.pro").unlink(missing_ok=True)
    return {"bomb": o_bomb, "uri": o_uri, "obsid": o_obsid, "pid": o_pid, "xxe": x_xxe, "laughs": x_laughs,
            "giant": x_giant, "bytes": x_bytes}


@pytest.fixture(scope="module")
def hostile_run(archive_server, demo_sky, reference_ingest, tmp_path_factory):
    from tasks.mast.stage import run_ingest
    from tests.chaos.conftest import run_stage_inline

    base = tmp_path_factory.mktemp("hostile")
    reference_rows = {name: table_rows(reference_ingest, name) for name in ("proposals", "previews")}
    victims = doctor_sky(demo_sky, base / "sky", reference_rows)
    data = base / "data"
    with archive_configured(archive_server, demo_sky, sky_dir=base / "sky"):
        run_ingest(ingest_params(archive_server.url, data))
    summarized = run_stage_inline("summarize", data)
    built = run_stage_inline("dataset", data)
    return victims, data, summarized, built


def _quarantine(data: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for row in table_rows(data, "quarantine"):
        assert row["detail"], f"quarantine row {row} has no detail"
        out.setdefault(row["record_id"], set()).add(row["reason"])
    return out


def test_each_hostile_input_is_quarantined_with_its_reason(hostile_run, chaos_figures):
    victims, data, _, _ = hostile_run
    quarantine = _quarantine(data)
    expected = {
        f"preview/{victims['bomb']}": "too_large",  # refused from its header, never decoded
        f"preview/{victims['uri']}": "http_400",  # the archive refuses '..' in a URI
        f"observation/../../../../tmp/{ESCAPE_NAME}": "invalid_observation",
        f"observation/{victims['pid']}": "invalid_observation",
        f"proposal/{victims['xxe']}": "unsafe_xml",
        f"proposal/{victims['laughs']}": "unsafe_xml",
    }
    sky_defects = {"corrupt_jpeg": ("preview", "decode_error"), "zero_byte_jpeg": ("preview", "decode_error"),
                   "preview_404": ("preview", "http_404"), "no_preview": ("preview", "no_preview"),
                   "empty_abstract": ("proposal", "empty_abstract")}
    truth = ground_truth(Path(data).parent / "sky")["bad_records"]
    for kind, (prefix, reason) in sky_defects.items():
        expected |= {f"{prefix}/{ident}": reason for ident in truth[kind]}
    for record_id, reason in expected.items():
        assert reason in quarantine.get(record_id, set()), f"{record_id}: {quarantine.get(record_id)}"
    assert "abstract_too_long" in quarantine.get(victims["giant"], set())  # summarize refuses it
    chaos_figures.bad_inputs += ["decompression-bomb preview", "../ in a preview URI", "../ in an obsid",
                                 "malformed proposal id", "XXE in an APT file", "billion laughs in an APT file",
                                 "giant abstract (200k words)", "non-UTF-8 bytes in the catalog",
                                 "corrupt JPEG", "zero-byte JPEG", "preview 404", "empty abstract"]


def test_nothing_else_is_lost_or_garbled(hostile_run, reference_ingest, chaos_figures):
    victims, data, _, built = hostile_run
    reference = {name: {r[k]: r for r in table_rows(reference_ingest, name)}
                 for name, k in (("observations", "obsid"), ("proposals", "proposal_id"), ("previews", "obsid"))}
    got = {name: {r[k]: r for r in table_rows(data, name)}
           for name, k in (("observations", "obsid"), ("proposals", "proposal_id"), ("previews", "obsid"))}
    gone_obs = {victims["obsid"], victims["pid"]}
    assert set(got["observations"]) == set(reference["observations"]) - gone_obs
    assert set(got["proposals"]) == set(reference["proposals"]) - {victims["xxe"], victims["laughs"]}
    for obsid, row in got["previews"].items():
        if obsid not in (victims["bomb"], victims["uri"]):
            assert row == reference["previews"][obsid]
    # One record's broken bytes do not turn the rest of the catalog into mojibake.
    truth = ground_truth_of(data, reference_ingest)
    for pid in truth:
        assert got["proposals"][pid]["pi"] == reference["proposals"][pid]["pi"]
    bytes_proposal = got["proposals"][victims["bytes"]]
    assert "The café ÿ" in bytes_proposal["abstract"]
    for pid, row in got["proposals"].items():
        if pid not in (victims["bytes"], victims["giant"]):
            assert row == reference["proposals"][pid], pid
    assert len(got["proposals"][victims["giant"]]["abstract"].split()) == GIANT_WORDS
    assert built.stats["examples"]["total"] > 0
    chaos_figures.records_lost += len(set(reference["observations"]) - set(got["observations"]) - gone_obs)


def ground_truth_of(data: Path, reference_ingest: Path) -> list[str]:
    """Proposals whose PI has non-ASCII letters (the sky's non_ascii defect and any other)."""
    return [r["proposal_id"] for r in table_rows(reference_ingest, "proposals") if not r["pi"].isascii()]


def test_nothing_is_written_outside_the_data_root(hostile_run):
    _, data, _, _ = hostile_run
    assert not list(Path("/tmp").glob(f"{ESCAPE_NAME}*"))
    assert not list(Path(data).parent.glob(f"**/{ESCAPE_NAME}*"))
    store = ImageStore(DataLayout(str(data)).images)
    for key in store.keys():  # every stored preview is a normalised 512x512 JPEG
        with Image.open(store.path(key)) as image:
            assert (image.format, image.size) == ("JPEG", (512, 512))
