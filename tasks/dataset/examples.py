"""Join observations, previews, proposals and summaries into examples (metadata only).

Pure: tables in, validated example records plus quarantine records out. Pixels are read later,
one at a time, by the shard writer, so the join never holds images in memory.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from schemas.dataset import SPLITS, BuildDatasetParams, ExampleMeta
from schemas.errors import InputError
from schemas.records import QuarantineRecord, normalize_proposal_id, sha256_text
from tasks.dataset.splits import assign_split, row_order_key

log = logging.getLogger(__name__)

STAGE = "build_dataset"
INPUT_TABLES: tuple[str, ...] = ("observations", "previews", "proposals", "summaries")
_SPACES = re.compile(r"\s+")


@dataclass
class ExamplePlan:
    """The examples to write, in shard order, and what was refused on the way."""

    examples: list[ExampleMeta]
    rejects: list[QuarantineRecord] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def _rows(table: pa.Table, wanted: tuple[str, ...], name: str, required: tuple[str, ...]) -> list[dict]:
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise InputError(f"table {name!r} lacks columns {missing} (has {table.column_names})")
    return table.select([c for c in wanted if c in table.column_names]).to_pylist()


def _clean(text: str | None) -> str:
    return _SPACES.sub(" ", text or "").strip()


def summary_caption(row: dict) -> str:
    """'<objects and phenomena>; <science use cases>' (the paper's caption), from the lists if the
    summarize stage left the caption column empty."""
    caption = _clean(row.get("caption"))
    if caption:
        return caption
    objects = ", ".join(_clean(x) for x in row.get("objects_and_phenomena") or [] if _clean(x))
    uses = ", ".join(_clean(x) for x in row.get("science_use_cases") or [] if _clean(x))
    return f"{objects}; {uses}" if objects or uses else ""


def abstract_caption(category: str, abstract: str, prefix: bool) -> str:
    abstract = _clean(abstract)
    category = _clean(category).rstrip(".")
    if prefix and category and abstract:
        return f"Category: {category}. {abstract}"
    return abstract


def _pick_summaries(rows: list[dict], abstract_hashes: dict[str, set[str]]) -> tuple[dict[str, dict], int]:
    """One summary per proposal: the one made from the proposal's current abstract, else the last."""
    by_proposal: dict[str, dict] = {}
    matched: dict[str, bool] = {}
    for row in rows:
        # A summaries table may keep failures as rows with a status: only usable ones count.
        if row.get("status") not in (None, "ok"):
            continue
        try:
            pid = normalize_proposal_id(row.get("proposal_id"))
        except ValueError:
            continue
        is_match = row.get("abstract_sha256") in abstract_hashes.get(pid, ())
        if is_match or not matched.get(pid, False):
            by_proposal[pid] = row
            matched[pid] = is_match
    mismatched = sum(1 for pid in by_proposal if not matched[pid])
    return by_proposal, mismatched


def _reject(record_id: str, reason: str, detail: str) -> QuarantineRecord:
    return QuarantineRecord(record_id=record_id or "?", stage=STAGE, reason=reason, detail=detail[:2000])


def plan_examples(tables: dict[str, pa.Table | None], params: BuildDatasetParams) -> ExamplePlan:
    """Join the four input tables into validated example metadata, in shard order."""
    obs_rows = _rows(tables["observations"], ("obsid", "obs_id", "proposal_id", "instrument_name", "filters",
                                              "target_name", "s_ra", "s_dec"),
                     "observations", ("obsid", "proposal_id"))
    preview_rows = _rows(tables["previews"], ("obsid", "proposal_id", "status", "sha256"),
                         "previews", ("obsid", "status", "sha256"))
    proposal_rows = _rows(tables["proposals"], ("proposal_id", "cycle", "category", "title", "abstract"),
                          "proposals", ("proposal_id", "cycle", "abstract"))
    summaries = tables.get("summaries")
    summary_rows = [] if summaries is None else _rows(
        summaries, ("proposal_id", "abstract_sha256", "caption", "objects_and_phenomena", "science_use_cases",
                    "status"), "summaries", ("proposal_id",))
    if summaries is not None and "caption" not in summaries.column_names and not {
            "objects_and_phenomena", "science_use_cases"} <= set(summaries.column_names):
        # Not a summaries table at all: say so, rather than quarantine every example as 'no_summary'.
        raise InputError(f"table 'summaries' has neither a caption column nor the two summary lists "
                         f"(has {summaries.column_names}): rerun `hubbleclip summarize`")

    stats: Counter[str] = Counter()
    rejects: list[QuarantineRecord] = []
    observations = {str(r["obsid"]): r for r in obs_rows}
    proposals: dict[str, dict] = {}
    for row in proposal_rows:
        proposals[normalize_proposal_id(row["proposal_id"])] = row
    abstracts = {pid: _clean(r.get("abstract")) for pid, r in proposals.items()}
    # The summarize stage may hash the abstract as stored or as cleaned: accept either.
    hashes = {pid: {sha256_text(r.get("abstract") or ""), sha256_text(abstracts[pid])} for pid, r in proposals.items()}
    chosen_summaries, mismatched = _pick_summaries(summary_rows, hashes)
    stats["summaries_from_older_abstract"] = mismatched

    previews: dict[str, dict] = {}
    for row in preview_rows:
        if row.get("status") == "ok" and row.get("sha256"):
            previews[str(row["obsid"])] = row  # the last ok row wins, as in an upsert
    stats["observations_without_image"] = len(observations.keys() - previews.keys())

    examples: list[tuple[bytes, ExampleMeta]] = []
    shared_captions: dict[str, tuple[str, str]] = {}
    for obsid, preview in previews.items():
        obs = observations.get(obsid)
        if obs is None:
            rejects.append(_reject(obsid, "no_observation", "a stored preview has no observations row"))
            continue
        try:
            pid = normalize_proposal_id(obs["proposal_id"])
        except ValueError as err:
            rejects.append(_reject(obsid, "invalid_row", f"proposal_id: {err}"))
            continue
        proposal = proposals.get(pid)
        if proposal is None:
            rejects.append(_reject(obsid, "no_proposal", f"proposal {pid} is not in the proposals table"))
            continue
        if not abstracts[pid]:
            rejects.append(_reject(obsid, "no_abstract", f"proposal {pid} has an empty abstract"))
            continue
        summary = chosen_summaries.get(pid)
        caption = summary_caption(summary) if summary else ""
        if not caption and params.require_summary:
            rejects.append(_reject(obsid, "no_summary", f"proposal {pid} has no usable summary"))
            continue
        try:
            cycle = int(proposal["cycle"])
            meta = ExampleMeta(
                obsid=obsid, obs_id=obs.get("obs_id") or "", proposal_id=pid,
                split=assign_split(pid, cycle, params), cycle=cycle,
                category=_clean(proposal.get("category")), title=_clean(proposal.get("title")),
                instrument=obs.get("instrument_name") or "", filters=obs.get("filters") or "",
                target=obs.get("target_name") or "", s_ra=obs.get("s_ra"), s_dec=obs.get("s_dec"),
                caption_summary=caption,
                caption_abstract=abstract_caption(proposal.get("category") or "", abstracts[pid],
                                                  params.category_prefix),
                objects_and_phenomena=list((summary or {}).get("objects_and_phenomena") or []),
                science_use_cases=list((summary or {}).get("science_use_cases") or []),
                image_sha256=preview["sha256"],
            )
        except (ValidationError, ValueError, TypeError) as err:
            rejects.append(_reject(obsid, "invalid_row", str(err).replace("\n", " ")))
            continue
        # Pydantic copies strings: share one abstract per proposal, or 40,000 examples hold 40,000
        # copies of ~20 abstracts each (about 100 MB at real abstract lengths).
        shared = shared_captions.setdefault(pid, (meta.caption_summary, meta.caption_abstract))
        meta = meta.model_copy(update={"caption_summary": shared[0], "caption_abstract": shared[1]})
        examples.append((row_order_key(obsid, params.split_salt), meta))

    split_rank = {name: i for i, name in enumerate(SPLITS)}
    examples.sort(key=lambda item: (split_rank[item[1].split], item[0], item[1].obsid))
    for reject in rejects:
        stats[f"quarantined_{reject.reason}"] += 1
    stats["examples_planned"] = len(examples)
    if rejects:
        log.warning("build_dataset: %d of %d previews quarantined (%s)", len(rejects), len(previews),
                    ", ".join(f"{k}={v}" for k, v in sorted(stats.items()) if k.startswith("quarantined_")))
    return ExamplePlan(examples=[meta for _, meta in examples], rejects=rejects, stats=dict(stats))
