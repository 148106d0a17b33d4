"""Proposal parsers: the real APT file, synthetic .pro and catalog files, hostile XML."""

from __future__ import annotations

import pytest

from tasks.mast.parsers import (
    ParseError,
    clean_paragraphs,
    decode_text,
    parse_apt,
    parse_catalog,
    parse_document,
    parse_pro,
    sniff_kind,
)

PRO_MODERN = """\
                                                 13012( 13) - 10/08/2012 18:10  - [  1]

                   HUBBLE SPACE TELESCOPE OBSERVING PROGRAM 13012

Title
Near-equinox spectro-imaging of Uranus aurorae sampling two planetary
rotations
------------------------------------------------------------------------------------
Type      Cycle
GO        20
------------------------------------------------------------------------------------
Scientific Category: SOLAR SYSTEM
------------------------------------------------------------------------------------
PI: Dr. Laurent Lamy                  Observatoire de Paris - Section de Meudon   FRA
CoI: Prof. John T. Clarke             Boston University                           USA
------------------------------------------------------------------------------------
Abstract

A quarter of century after their discovery by Voyager 2, HST re-detected Uranus
aurorae in 2011. We aim to:
* sample two planetary rotations;
* characterise the extended neutral corona.
\f                                                 13012( 13) - 10/08/2012 18:10  - [  2]

The caf\xe9 observations will be scheduled in advance.
------------------------------------------------------------------------------------
"""

PRO_1998 = """\
                                                 6803( 13) - 10/12/98 09:54  - [  1]

    PROPOSAL FOR HUBBLE SPACE TELESCOPE OBSERVATIONS   ST ScI Use Only
                                                       ID:      6803
                                                       Version: 13

1.Proposal Title:
Disk-resolved Spectrophotometry of the Dark Side of Iapetus
------------------------------------------------------------------------------------
2. Proposal For  3. Cycle
GO               6
------------------------------------------------------------------------------------
4. Investigators
    PI: Tilmann Denk                      Deutsches Zentrum fuer Luft- und Raumfahrt
------------------------------------------------------------------------------------
5. Abstract

With this HST observation, we will obtain the first spectrum of pure dark
material on Iapetus.
------------------------------------------------------------------------------------
"""

CATALOG = """\
--------------------------------------------------------------------------------
Prop. Type: GO
Category: SOLAR SYSTEM
ID: 13012
Cycle: 20
Title: Near-equinox spectro-imaging of Uranus aurorae sampling two planetary
 rotations
PI: Laurent Lamy

A quarter of century after their discovery by Voyager 2, HST re-detected Uranus
aurorae in 2011.

  - first bullet
  - second bullet
--------------------------------------------------------------------------------
Prop. Type: SNAP
Category: GALAXIES
ID: 07885
Cycle: 7
Title: A snapshot survey
PI: Dr. Ana Gómez

Gómez's survey of “barred” galaxies &amp; more.
--------------------------------------------------------------------------------
Prop. Type: GO
Category: COSMOLOGY
ID: 99
Cycle: unknown
Title: Broken record
PI: Nobody

Text.
--------------------------------------------------------------------------------
"""


def test_real_apt_reads_proposal_information_cycle(shared_dir):
    data = (shared_dir / "fixtures" / "proposals" / "13012_phase2.apt").read_bytes()
    proposal = parse_apt(data)
    assert proposal.proposal_id == "13012"
    assert proposal.cycle == 20
    assert proposal.proposal_type == "GO"
    assert proposal.category == "SOLAR SYSTEM"
    assert proposal.title.startswith("Near-equinox spectro-imaging of Uranus aurorae")
    assert proposal.pi == "Laurent Lamy"
    assert proposal.abstract.startswith("A quarter of century after their discovery by Voyager 2 in 1986")
    assert len(proposal.abstract) > 1500
    assert proposal.source == "apt"


def test_apt_cycle_comes_from_proposal_information_not_submission_data():
    xml = b"""<?xml version="1.0" encoding="UTF-8"?>
<HSTProposal Phase2ID="12345">
  <ToolData><SubmissionData Cycle="19"/><Phase2SubmissionData Cycle="18"/></ToolData>
  <ProposalInformation Category="GO" Cycle="21">
    <Title>T</Title><Abstract>A</Abstract>
    <PrincipalInvestigator FirstName="A" LastName="B"/>
  </ProposalInformation>
</HSTProposal>"""
    assert parse_apt(xml).cycle == 21


def test_apt_latin1_entities_and_paragraphs():
    xml = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<HSTProposal Phase2ID="777">'
           '<ProposalInformation Category="SNAP" Cycle="9"><Title>Caf\xe9  &amp; stars</Title>'
           '<Abstract>First line\nwrapped &#x201c;here&#x201d;.\n\n* bullet one\n* bullet two</Abstract>'
           '<PrincipalInvestigator Honorific="Dr." FirstName="Jos\xe9" MiddleInitial="Q." LastName="Ruiz"/>'
           '</ProposalInformation></HSTProposal>').encode("latin-1")
    p = parse_apt(xml)
    assert p.title == "Café & stars"
    assert p.abstract == "First line wrapped \u201chere\u201d.\n\n* bullet one\n* bullet two"
    assert p.pi == "José Q. Ruiz"
    assert p.category == ""  # no ScientificCategory element
    assert p.proposal_type == "SNAP"


@pytest.mark.parametrize(
    "xml, reason",
    [
        (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">'
         b'<!ENTITY c "&b;&b;&b;&b;&b;&b;">]><HSTProposal Phase2ID="1"><ProposalInformation Cycle="1">'
         b'<Abstract>&c;</Abstract></ProposalInformation></HSTProposal>', "unsafe_xml"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
         b'<HSTProposal Phase2ID="1"><ProposalInformation Cycle="1"><Abstract>&xxe;</Abstract>'
         b'</ProposalInformation></HSTProposal>', "unsafe_xml"),
        (b'<HSTProposal Phase2ID="1"><ProposalInformation Cycle="1"><Abstract>cut', "malformed_xml"),
        (b'<HSTProposal Phase2ID="1"><ProposalInformation Cycle="x"/></HSTProposal>', "missing_cycle"),
        (b'<HSTProposal><ProposalInformation Cycle="3"/></HSTProposal>', "invalid_proposal"),
    ],
)
def test_apt_hostile_or_broken_xml_is_refused_with_a_reason(xml, reason):
    with pytest.raises(ParseError) as info:
        parse_apt(xml)
    assert info.value.reason == reason


def test_modern_pro_report():
    p = parse_pro(PRO_MODERN.encode("latin-1"))
    assert (p.proposal_id, p.cycle, p.proposal_type, p.category) == ("13012", 20, "GO", "SOLAR SYSTEM")
    assert p.title == "Near-equinox spectro-imaging of Uranus aurorae sampling two planetary rotations"
    assert p.pi == "Laurent Lamy"
    assert p.abstract == (
        "A quarter of century after their discovery by Voyager 2, HST re-detected Uranus aurorae in 2011. "
        "We aim to:\n* sample two planetary rotations;\n* characterise the extended neutral corona."
        "\n\nThe café observations will be scheduled in advance."
    )
    assert p.source == "pro"


def test_post_1995_pro_report():
    p = parse_pro(PRO_1998.encode("latin-1"))
    assert (p.proposal_id, p.cycle, p.proposal_type) == ("6803", 6, "GO")
    assert p.title == "Disk-resolved Spectrophotometry of the Dark Side of Iapetus"
    assert p.pi == "Tilmann Denk"
    assert p.abstract.startswith("With this HST observation") and p.abstract.endswith("on Iapetus.")


def test_pro_without_abstract_is_an_empty_abstract_failure():
    text = PRO_1998.split("5. Abstract")[0] + "5. Abstract\n\n------------------------------\n"
    with pytest.raises(ParseError) as info:
        parse_document(text.encode(), "pro")
    assert info.value.reason == "empty_abstract"


def test_catalog_records_bullets_entities_and_a_bad_record():
    records, failures = parse_catalog(CATALOG.encode("utf-8"))
    by_id = {r.proposal_id: r for r in records}
    assert set(by_id) == {"13012", "7885"}  # zero-padded ids are normalised
    first = by_id["13012"]
    assert (first.cycle, first.category, first.proposal_type, first.pi) == (20, "SOLAR SYSTEM", "GO", "Laurent Lamy")
    assert first.title == "Near-equinox spectro-imaging of Uranus aurorae sampling two planetary rotations"
    assert first.abstract == ("A quarter of century after their discovery by Voyager 2, HST re-detected "
                              "Uranus aurorae in 2011.\n\n- first bullet\n- second bullet")
    second = by_id["7885"]
    assert second.pi == "Ana Gómez" and second.abstract == "Gómez's survey of “barred” galaxies & more."
    assert [(ident, err.reason) for ident, err in failures] == [("99", "missing_cycle")]


def test_catalog_in_latin1_decodes():
    records, _ = parse_catalog(CATALOG.encode("latin-1", errors="replace"))
    assert any(r.pi.startswith("Ana G") for r in records)


def test_sources_agree_on_the_same_proposal(shared_dir):
    apt = parse_apt((shared_dir / "fixtures" / "proposals" / "13012_phase2.apt").read_bytes())
    pro = parse_pro(PRO_MODERN.encode("latin-1"))
    catalog = {r.proposal_id: r for r in parse_catalog(CATALOG.encode())[0]}["13012"]
    assert apt.title == pro.title == catalog.title
    assert apt.pi == pro.pi == catalog.pi
    assert apt.cycle == pro.cycle == catalog.cycle
    assert apt.category == pro.category == catalog.category


def test_text_helpers():
    assert decode_text("é".encode()) == "é"
    assert decode_text("é".encode("latin-1")) == "é"
    assert decode_text(b"\xef\xbb\xbfabc") == "abc"
    assert clean_paragraphs("X-\nray sources  and\r\nmore\n\n\n- a\n- b") == "X-ray sources and more\n\n- a\n- b"
    assert sniff_kind(b"<?xml", "") == "apt"
    assert sniff_kind(b"Prop. Type: GO\n", "") == "catalog"
    assert sniff_kind(b"anything", "x/13012.pro") == "pro"
