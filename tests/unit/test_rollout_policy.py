"""The policy is one typed value (`RolloutPolicy`) read back from the stored JSON, with its
defaults in one place: the API's request model cannot drift from them."""

from __future__ import annotations

from orchestrator.api.schemas import BatchPolicy
from orchestrator.domain.policy import DEFAULT_POLICY, RolloutPolicy


def test_the_request_model_and_the_domain_agree_on_every_default() -> None:
    stored = BatchPolicy().model_dump(mode="json")
    assert RolloutPolicy.from_json(stored) == DEFAULT_POLICY
    assert set(stored) == set(RolloutPolicy.__dataclass_fields__)


def test_a_stored_policy_reads_back_typed() -> None:
    stored = BatchPolicy.model_validate(
        {
            "waves": [1, "10%", "100%"],
            "max_in_flight": "25%",
            "max_failures": 3,
            "pause_after_waves": [1, 2],
            "wave_delay_s": 30,
            "poll_interval_s": 5,
            "skip_matching": False,
        }
    ).model_dump(mode="json")
    policy = RolloutPolicy.from_json(stored)
    assert policy == RolloutPolicy(
        max_in_flight="25%",
        poll_interval_s=5.0,
        job_timeout_s=1800,
        waves=(1, "10%", "100%"),
        max_failures=3,
        pause_after_waves=(1, 2),
        wave_delay_s=30.0,
        skip_matching=False,
    )
    assert policy.in_flight_limit(200) == 50


def test_an_empty_or_missing_policy_is_the_defaults() -> None:
    assert RolloutPolicy.from_json(None) == RolloutPolicy.from_json({}) == DEFAULT_POLICY
