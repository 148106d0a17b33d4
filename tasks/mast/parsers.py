"""Parsers for the three proposal sources: APT XML, the `.pro` text report, the catalog flat file.

Each returns validated `Proposal` records or raises `InputError` with a short machine-friendly
`reason` attribute (used as the quarantine reason). All three normalise text the same way, so the
same proposal read from different sources gives the same title, PI and abstract:
- bytes are decoded as UTF-8, else Windows-1252, else Latin-1 (STScI files use both encodings);
- wrapped lines are joined; blank lines stay paragraph breaks; bullet lines stay on their own line;
- honorifics are dropped from the PI ("Dr. Laurent Lamy" -> "Laurent Lamy").

APT XML goes through defusedxml: DTD entities (billion laughs) and external references (XXE)
are refused, never expanded. The cycle is `ProposalInformation@Cycle`; the file has other
`Cycle` attributes (SubmissionData, Phase2SubmissionData) that must not be read.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable

from pydantic import ValidationError

from schemas.errors import InputError
from schemas.records import Proposal, ProposalSource

BULLET = re.compile(r"^(?:[*\u2022\u25cf\u25e6\u2013-]|o|\d{1,2}[.)]|\([a-z0-9]{1,2}\))\s+\S")
RULE = re.compile(r"^\s*-{4,}\s*$")
HONORIFIC = re.compile(r"^(?:dr|prof|professor|mr|mrs|ms|miss|sir)\.?\s+", re.I)


class ParseError(InputError):
    """A document that does not yield a usable proposal; `reason` goes to the quarantine table."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# -- text helpers --------------------------------------------------------------------------------
def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), else Windows-1252, else Latin-1 (which never fails)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def decode_lines(data: bytes) -> str:
    """Like decode_text, line by line: in a file assembled from many records (the catalog), one
    record's stray Windows-1252 bytes must not turn every other record's UTF-8 into mojibake."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "\n".join(decode_text(line) for line in data.split(b"\n"))


def _squash(line: str) -> str:
    return re.sub(r"\s+", " ", line).strip()


def clean_line(text: str) -> str:
    """One-line fields (title, PI, category): NFC, whitespace collapsed."""
    return _squash(unicodedata.normalize("NFC", text or ""))


def clean_paragraphs(text: str) -> str:
    """Multi-line text: join wrapped lines, keep blank-line paragraphs and bullet lines."""
    text = unicodedata.normalize("NFC", (text or "").replace("\r\n", "\n").replace("\r", "\n"))
    paragraphs: list[list[str]] = [[]]
    for raw in text.split("\n"):
        line = _squash(raw.replace("\f", ""))
        if not line:
            if paragraphs[-1]:
                paragraphs.append([])
            continue
        lines = paragraphs[-1]
        if not lines or BULLET.match(line):
            lines.append(line)
        elif lines[-1].endswith("-") and not lines[-1].endswith(" -") and line[:1].islower():
            lines[-1] = lines[-1] + line  # a word hyphenated across lines
        else:
            lines[-1] = f"{lines[-1]} {line}"
    return "\n\n".join("\n".join(p) for p in paragraphs if p)


def clean_person(name: str) -> str:
    name = clean_line(name)
    while HONORIFIC.match(name):
        name = HONORIFIC.sub("", name, count=1)
    return name


def _build(source: ProposalSource, **fields: object) -> Proposal:
    try:
        return Proposal(source=source, **fields)  # type: ignore[arg-type]
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ParseError("invalid_proposal", f"{source}: {where}: {first['msg']}") from None


def _require_abstract(proposal: Proposal) -> Proposal:
    if not proposal.abstract:
        raise ParseError("empty_abstract", f"{proposal.source} record for {proposal.proposal_id} has no abstract")
    return proposal


def _cycle(value: str | None, source: str) -> int:
    text = (value or "").strip()
    if not text.isdigit():
        raise ParseError("missing_cycle", f"{source}: no usable cycle (got {value!r})")
    return int(text)


# -- APT XML -------------------------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(element, name: str):  # noqa: ANN001, ANN202 - ElementTree types
    for child in element.iter():
        if _local(child.tag) == name:
            return child
    return None


def parse_apt(data: bytes) -> Proposal:
    """A Phase II APT XML file -> Proposal (source "apt")."""
    import xml.etree.ElementTree as StdET

    import defusedxml
    import defusedxml.ElementTree as SafeET

    try:
        root = SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as err:
        raise ParseError("unsafe_xml", f"apt: refused XML ({type(err).__name__}: entity or external reference)") from None
    except StdET.ParseError as err:
        raise ParseError("malformed_xml", f"apt: not well-formed XML ({err})") from None
    info = root if _local(root.tag) == "ProposalInformation" else _find(root, "ProposalInformation")
    if info is None:
        raise ParseError("invalid_proposal", "apt: no ProposalInformation element")
    proposal_id = root.get("Phase2ID") or info.get("Phase2ID") or ""
    if not proposal_id.strip():
        raise ParseError("invalid_proposal", "apt: no HSTProposal@Phase2ID")
    title = _find(info, "Title")
    abstract = _find(info, "Abstract")
    pi = _find(info, "PrincipalInvestigator")
    science = _find(info, "ScientificCategory")
    pi_name = ""
    if pi is not None:
        pi_name = " ".join(p for p in (pi.get("FirstName"), pi.get("MiddleInitial"), pi.get("LastName")) if p)
    return _build(
        "apt",
        proposal_id=proposal_id,
        cycle=_cycle(info.get("Cycle"), "apt ProposalInformation@Cycle"),
        # The paper's caption category is the scientific category; @Category is the type (GO, SNAP...).
        category=clean_line(science.text if science is not None and science.text else ""),
        proposal_type=clean_line(info.get("Category") or ""),
        title=clean_line("".join(title.itertext()) if title is not None else ""),
        pi=clean_person(pi_name),
        abstract=clean_paragraphs("".join(abstract.itertext()) if abstract is not None else ""),
    )


# -- .pro text report ----------------------------------------------------------------------------
PRO_ID = (
    re.compile(r"^\s*HUBBLE SPACE TELESCOPE OBSERVING PROGRAM\s+(\d{1,6})\b"),
    re.compile(r"^\s+ID:?\s+(\d{1,6})\s*$"),
)
PRO_TITLE = re.compile(r"^\s*(?:1\.\s*Proposal\s+)?Title:?\s*$", re.I)
PRO_TYPE_CYCLE = re.compile(r"^\s*(?:\d\.\s*)?(?:Type|Proposal For)\s+(?:\d\.\s*)?Cycle\s*$", re.I)
PRO_OLD_INFO = re.compile(r"^\s*2\.\s*Scientific Category\s+3\.\s*Proposal For\s+4\.\s*(?:Cycle|Proposal Type)", re.I)
PRO_CATEGORY = re.compile(r"^\s*(?:Scientific\s+)?Category:?\s*(\S.*)?$", re.I)
PRO_PI = re.compile(r"^\s*PI:\s*(.+?)(?:\s{2,}.*)?$")
PRO_ABSTRACT = re.compile(r"^\s*(?:[567]\.)?\s*Abstract:?\s*$", re.I)
PRO_PAGE = re.compile(r"^\s*(?:\d{1,6}\(\s*\d+\)\s+-.*\[\s*\d+\]|Page\s+\d+)\s*$")


def _section(lines: list[str], start: int) -> list[str]:
    """Lines after a header up to the next rule, with page headers and form feeds removed."""
    out = []
    for line in lines[start:]:
        if RULE.match(line):
            break
        if PRO_PAGE.match(line.replace("\f", "")):
            continue
        out.append(line.replace("\f", ""))
    return out


def parse_pro(data: bytes) -> Proposal:
    """A Phase II `.pro` text report (modern or post-1995 layout) -> Proposal (source "pro")."""
    lines = decode_text(data).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    proposal_id = ""
    for pattern in PRO_ID:
        proposal_id = next((m.group(1) for m in map(pattern.match, lines) if m), "")
        if proposal_id:
            break
    if not proposal_id:
        raise ParseError("invalid_proposal", "pro: no proposal id line")
    title = proposal_type = category = cycle = pi = abstract = ""
    for i, line in enumerate(lines):
        if not title and PRO_TITLE.match(line):
            title = " ".join(_section(lines, i + 1))
        elif not cycle and PRO_TYPE_CYCLE.match(line) and i + 1 < len(lines):
            values = lines[i + 1].split()
            if len(values) >= 2:
                proposal_type, cycle = values[0], values[-1]
        elif not cycle and PRO_OLD_INFO.match(line) and i + 1 < len(lines):
            # "SOLAR SYSTEM                GO               6": category, type, cycle by column
            parts = re.split(r"\s{2,}", lines[i + 1].strip())
            if len(parts) >= 3:
                category, proposal_type, cycle = parts[0], parts[1], parts[2].split()[0]
        elif not category and (m := PRO_CATEGORY.match(line)):
            category = m.group(1) or " ".join(_section(lines, i + 1)[:1])
        elif not pi and (m := PRO_PI.match(line)):
            pi = m.group(1)
        elif not abstract and PRO_ABSTRACT.match(line):
            abstract = "\n".join(_section(lines, i + 1))
    return _build(
        "pro",
        proposal_id=proposal_id,
        cycle=_cycle(cycle, "pro Type/Cycle"),
        category=clean_line(category),
        proposal_type=clean_line(proposal_type.split("/")[0]),
        title=clean_line(title),
        pi=clean_person(pi),
        abstract=clean_paragraphs(abstract),
    )


# -- catalog flat file ---------------------------------------------------------------------------
CATALOG_FIELD = re.compile(r"^\s*(Prop\.?\s*Type|Category|ID|Cycle|Title|PI)\s*:\s*(.*)$", re.I)
_CATALOG_KEYS = {"proptype": "proposal_type", "category": "category", "id": "proposal_id",
                 "cycle": "cycle", "title": "title", "pi": "pi"}


def _catalog_blocks(text: str) -> Iterable[list[str]]:
    block: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if RULE.match(line):
            if any(s.strip() for s in block):
                yield block
            block = []
        else:
            block.append(line)
    if any(s.strip() for s in block):
        yield block


def _catalog_record(block: list[str]) -> Proposal:
    fields: dict[str, str] = {}
    abstract: list[str] = []
    current = ""
    for line in block:
        m = CATALOG_FIELD.match(line)
        if m and not abstract:
            key = _CATALOG_KEYS[re.sub(r"[\s.]", "", m.group(1)).lower()]
            fields[key] = m.group(2)
            current = key
        elif "pi" in fields or abstract:
            abstract.append(line)  # everything after the PI line is the abstract
        elif current == "title" and line.strip():
            fields["title"] += " " + line  # a title wrapped over several lines
    if "proposal_id" not in fields:
        raise ParseError("invalid_proposal", "catalog: record without an ID field")
    return _build(
        "catalog",
        proposal_id=fields["proposal_id"].strip(),
        cycle=_cycle(fields.get("cycle"), f"catalog record {fields['proposal_id'].strip()}"),
        category=clean_line(fields.get("category", "")),
        proposal_type=clean_line(fields.get("proposal_type", "")),
        title=clean_line(fields.get("title", "")),
        pi=clean_person(fields.get("pi", "")),
        abstract=clean_paragraphs("\n".join(abstract)),
    )


def parse_catalog(data: bytes) -> tuple[list[Proposal], list[tuple[str, ParseError]]]:
    """The STScI proposal abstracts flat file -> (records, [(record id or #n, error)]).

    Records are separated by lines of dashes; each has `Prop. Type:`, `Category:`, `ID:`,
    `Cycle:`, `Title:`, `PI:` lines, then the abstract. A bad record does not spoil the others.
    """
    records: list[Proposal] = []
    failures: list[tuple[str, ParseError]] = []
    # The flat file is generated from web pages: HTML entities (&amp;, &#8220;) may survive in it.
    for n, block in enumerate(_catalog_blocks(html.unescape(decode_lines(data))), start=1):
        try:
            records.append(_catalog_record(block))
        except ParseError as err:
            ident = next((m.group(2).strip() for m in map(CATALOG_FIELD.match, block)
                          if m and m.group(1).upper() == "ID"), f"#{n}")
            failures.append((ident, err))
    return records, failures


def parse_document(data: bytes, kind: str) -> Proposal:
    """Parse one document of a known kind ("apt" or "pro") and require an abstract."""
    parser = {"apt": parse_apt, "pro": parse_pro}.get(kind)
    if parser is None:
        raise InputError(f"unknown proposal document kind {kind!r}")
    return _require_abstract(parser(data))


def sniff_kind(data: bytes, name: str = "") -> str:
    """Guess "apt", "pro" or "catalog" from a file name, else from its first bytes."""
    lowered = name.lower().rstrip("/")
    if lowered.endswith((".apt", ".xml")) or "/apt/" in lowered:
        return "apt"
    if lowered.endswith(".pro"):
        return "pro"
    head = decode_text(data[:4096]).lstrip()
    if head.startswith("<"):
        return "apt"
    if re.search(r"^\s*Prop\.?\s*Type\s*:", head, re.M | re.I):
        return "catalog"
    return "pro"
