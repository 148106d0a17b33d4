import pyarrow as pa

from schemas.arrow import OBSERVATIONS_SCHEMA, PREVIEWS_SCHEMA, PROPOSALS_SCHEMA
from schemas.dataset import BuildDatasetParams
from schemas.records import sha256_text
from storage.tables import table_from_records
from tasks.dataset.examples import abstract_caption, plan_examples, summary_caption
from tasks.dataset.synthetic import SUMMARIES_SCHEMA

SHA = "ab" * 32


def _tables(summaries=True, abstract="We observe dwarf galaxies.  Twice.", extra_previews=()):
    observations = [
        {"obsid": "1", "obs_id": "j1", "proposal_id": "07885", "instrument_name": "WFPC2", "target_name": "M31"},
        {"obsid": "2", "obs_id": "j2", "proposal_id": "200"},   # proposal 200 has no summary
        {"obsid": "3", "obs_id": "j3", "proposal_id": "300"},   # proposal 300 has no abstract
        {"obsid": "4", "obs_id": "j4", "proposal_id": "400"},   # proposal 400 is unknown
        {"obsid": "5", "obs_id": "j5", "proposal_id": "7885"},  # no preview at all
        {"obsid": "6", "obs_id": "j6", "proposal_id": "7885"},  # preview failed upstream
    ]
    previews = [{"obsid": o, "proposal_id": p, "status": "ok", "sha256": SHA}
                for o, p in (("1", "7885"), ("2", "200"), ("3", "300"), ("4", "400"))]
    previews += [{"obsid": "6", "proposal_id": "7885", "status": "http_error", "sha256": ""}, *extra_previews]
    proposals = [
        {"proposal_id": "7885", "cycle": 7, "category": "Galaxies", "title": "T", "abstract": abstract,
         "source": "catalog"},
        {"proposal_id": "200", "cycle": 8, "abstract": "Stars.", "source": "apt"},
        {"proposal_id": "300", "cycle": 9, "abstract": "", "source": "apt"},
    ]
    sums = [{"proposal_id": "7885", "abstract_sha256": sha256_text(abstract), "caption": "dwarf galaxies; dark matter",
             "objects_and_phenomena": ["dwarf galaxies"], "science_use_cases": ["dark matter"]}] if summaries else []
    return {
        "observations": table_from_records(observations, OBSERVATIONS_SCHEMA),
        "previews": table_from_records(previews, PREVIEWS_SCHEMA),
        "proposals": table_from_records(proposals, PROPOSALS_SCHEMA),
        "summaries": pa.Table.from_pylist(sums, schema=SUMMARIES_SCHEMA),
    }


def test_join_builds_examples_and_quarantines_each_missing_piece_with_its_reason():
    plan = plan_examples(_tables(), BuildDatasetParams())
    assert [e.obsid for e in plan.examples] == ["1"]
    example = plan.examples[0]
    assert example.proposal_id == "7885" and example.cycle == 7 and example.instrument == "WFPC2"
    assert example.target == "M31" and example.image_sha256 == SHA
    assert example.caption_summary == "dwarf galaxies; dark matter"
    assert example.caption_abstract == "Category: Galaxies. We observe dwarf galaxies. Twice."
    reasons = {r.record_id: r.reason for r in plan.rejects}
    assert reasons == {"2": "no_summary", "3": "no_abstract", "4": "no_proposal"}
    assert all(r.stage == "build_dataset" and r.detail for r in plan.rejects)
    assert plan.stats["quarantined_no_summary"] == 1 and plan.stats["observations_without_image"] == 2


def test_without_required_summaries_the_abstract_still_makes_an_example():
    plan = plan_examples(_tables(summaries=False), BuildDatasetParams(require_summary=False,
                                                                      category_prefix=False))
    by_id = {e.obsid: e for e in plan.examples}
    assert set(by_id) == {"1", "2"}
    assert by_id["1"].caption_summary == "" and by_id["1"].caption_abstract == "We observe dwarf galaxies. Twice."


def test_a_summary_of_an_older_abstract_is_used_and_counted():
    tables = _tables()
    tables["proposals"] = table_from_records(
        [{"proposal_id": "7885", "cycle": 7, "abstract": "A revised abstract.", "source": "apt"}], PROPOSALS_SCHEMA)
    plan = plan_examples(tables, BuildDatasetParams())
    assert plan.examples[0].caption_summary == "dwarf galaxies; dark matter"
    assert plan.stats["summaries_from_older_abstract"] == 1


def test_a_row_that_fails_its_schema_is_quarantined_not_fatal():
    bad = [{"obsid": "9", "proposal_id": "7885", "status": "ok", "sha256": "not-a-sha"}]
    tables = _tables(extra_previews=bad)
    tables["observations"] = pa.concat_tables([tables["observations"], table_from_records(
        [{"obsid": "9", "obs_id": "j9", "proposal_id": "7885"}], OBSERVATIONS_SCHEMA)])
    plan = plan_examples(tables, BuildDatasetParams())
    assert [e.obsid for e in plan.examples] == ["1"]
    assert {r.record_id: r.reason for r in plan.rejects}["9"] == "invalid_row"


def test_caption_builders():
    assert summary_caption({"caption": "", "objects_and_phenomena": ["a", "b"], "science_use_cases": ["c"]}) == "a, b; c"
    assert summary_caption({"caption": " x;  y "}) == "x; y"
    assert abstract_caption("Stellar Physics.", "Text  here.", True) == "Category: Stellar Physics. Text here."
    assert abstract_caption("", "Text.", True) == "Text."
