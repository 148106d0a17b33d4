"""Proposal documents: APT XML shaped like the real one, Latin-1 .pro reports, the abstracts catalog."""

from __future__ import annotations

import json
import re
from pathlib import Path

from defusedxml import ElementTree

CATALOG_RULE = "-" * 80


def read_apt(data: bytes) -> dict[str, str]:
    """The fields every APT reader needs; works on the real file and on generated ones alike."""
    root = ElementTree.fromstring(data)
    info = root.find("ProposalInformation")
    pi = info.find("PrincipalInvestigator")
    return {"id": root.get("Phase2ID"), "cycle": info.get("Cycle"), "type": info.get("Category"),
            "title": info.findtext("Title"), "abstract": info.findtext("Abstract") or "",
            "pi": f"{pi.get('FirstName')} {pi.get('LastName')}",
            "submission_cycle": root.find("ToolData/ToolDataItem/SubmissionData").get("Cycle")}


def read_catalog(text: str) -> dict[str, dict[str, str]]:
    records = {}
    for block in text.split(CATALOG_RULE):
        fields, body = {}, []
        for line in block.strip("\n").splitlines():
            match = re.match(r"^(Prop\. Type|Category|ID|Cycle|Title|PI):\s*(.*)$", line)
            if match and not body:
                fields[match.group(1)] = match.group(2).strip()
            elif fields:
                body.append(line)
        if fields:
            fields["abstract"] = " ".join(" ".join(body).split())
            records[fields["ID"]] = fields
    return records


def read_pro_abstract(text: str) -> str:
    match = re.search(r"\nAbstract\n\n(.*?)\n-{84}", text, re.S)
    return " ".join(match.group(1).split()) if match else ""


def test_generated_apt_reads_like_the_real_13012(shared_dir: Path, demo_sky: Path) -> None:
    real = read_apt((shared_dir / "fixtures" / "proposals" / "13012_phase2.apt").read_bytes())
    assert real["id"] == "13012" and real["cycle"] == "20" and real["pi"] == "Laurent Lamy"
    truth = json.loads((demo_sky / "ground_truth.json").read_text())
    apt_files = sorted((demo_sky / "stsci" / "apt").glob("*.apt"))
    assert apt_files
    for path in apt_files:
        generated = read_apt(path.read_bytes())
        assert generated["id"] == path.stem
        assert int(generated["cycle"]) == truth["proposals"][path.stem]["cycle"]
        assert generated["title"] and generated["type"] in ("GO", "SNAP", "GTO", "DD", "AR")


def test_documents_agree_with_each_other_and_with_the_rows(demo_sky: Path) -> None:
    truth = json.loads((demo_sky / "ground_truth.json").read_text())
    catalog = read_catalog((demo_sky / "stsci" / "catalog.txt").read_text(encoding="utf-8"))
    assert set(catalog) == set(truth["proposals"])
    rows = json.loads((demo_sky / "caom" / "observations.json").read_text())["data"]
    titles = {r["proposal_id"]: r["obs_title"] for r in rows}
    bad = truth["bad_records"]
    for pid, record in catalog.items():
        assert int(record["Cycle"]) == truth["proposals"][pid]["cycle"]
        assert record["Prop. Type"] and record["Category"] and record["PI"]
        if pid in titles:
            assert titles[pid] == record["Title"]
        apt_path = demo_sky / "stsci" / "apt" / f"{pid}.apt"
        pro_path = demo_sky / "stsci" / "pro" / f"{pid}.pro"
        assert apt_path.exists() == (pid not in bad["pro_only"])
        assert pro_path.exists() == (pid not in bad["apt_only"])
        if apt_path.exists():
            apt = read_apt(apt_path.read_bytes())
            assert " ".join(apt["abstract"].split()) == record["abstract"]
            assert apt["title"] == record["Title"]
        if pro_path.exists():
            pro = pro_path.read_bytes().decode("latin-1")
            assert f"HUBBLE SPACE TELESCOPE OBSERVING PROGRAM {pid}" in pro
            assert re.search(rf"Type\s+Cycle\n\S+\s+{record['Cycle']}\s", pro)
            if pid not in bad["non_ascii"]:
                assert read_pro_abstract(pro) == record["abstract"]
    assert catalog[bad["empty_abstract"][0]]["abstract"] == ""


def test_non_ascii_text_survives_in_each_encoding(demo_sky: Path) -> None:
    truth = json.loads((demo_sky / "ground_truth.json").read_text())
    pid = truth["bad_records"]["non_ascii"][0]
    raw_apt = (demo_sky / "stsci" / "apt" / f"{pid}.apt").read_bytes()
    assert b"&#x201c;" in raw_apt and "Ramírez-Núñez".encode() in raw_apt
    assert "\u201cpilot\u201d" in read_apt(raw_apt)["abstract"]
    pro = demo_sky / "stsci" / "pro" / f"{pid}.pro"
    if pro.exists():
        raw_pro = pro.read_bytes()
        assert "Ramírez-Núñez".encode("latin-1") in raw_pro
        try:
            raw_pro.decode("utf-8")
            raise AssertionError("the .pro should be Latin-1, not UTF-8")
        except UnicodeDecodeError:
            pass
    catalog = (demo_sky / "stsci" / "catalog.txt").read_text(encoding="utf-8")
    assert "\u201cPilot\u201d" in catalog
