import math

import pytest
from pydantic import ValidationError

from schemas.arrow import OBSERVATIONS_SCHEMA, PROPOSALS_SCHEMA
from schemas.records import Observation, Proposal


def test_observation_normalizes_padded_proposal_id():
    obs = Observation(obsid="2003738726", obs_id="u9o40504m", proposal_id="07885")
    assert obs.proposal_id == "7885"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("proposal_id", "", "proposal id"),
        ("proposal_id", "12a", "proposal id"),
        ("s_ra", math.nan, "s_ra"),
        ("s_dec", 95.0, "s_dec"),
        ("t_obs_release", math.inf, "MJD"),
        ("obsid", "", "obsid"),
    ],
)
def test_observation_rejects_impossible_values(field, value, message):
    kwargs = {"obsid": "1", "obs_id": "x", "proposal_id": "1"} | {field: value}
    with pytest.raises(ValidationError, match=message):
        Observation(**kwargs)


def test_proposal_rejects_negative_cycle_with_clear_message():
    with pytest.raises(ValidationError, match="cycle"):
        Proposal(proposal_id="1", cycle=-1, source="apt")


def test_arrow_schemas_cover_every_field():
    assert OBSERVATIONS_SCHEMA.names == list(Observation.model_fields)
    assert PROPOSALS_SCHEMA.names == list(Proposal.model_fields)
