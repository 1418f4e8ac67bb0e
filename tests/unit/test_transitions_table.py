"""Every (from, to) pair of both transition tables, checked against the intended table."""

from __future__ import annotations

import itertools

import pytest

from orchestrator.domain.states import (
    BatchState,
    IllegalTransition,
    ServerState,
    check_batch_transition,
    check_server_transition,
)

S = ServerState
ALLOWED_SERVER = {
    (S.PENDING, S.SUBMITTING), (S.PENDING, S.CANCELLED), (S.PENDING, S.SKIPPED),
    (S.SUBMITTING, S.SUBMITTING), (S.SUBMITTING, S.PENDING), (S.SUBMITTING, S.RUNNING),
    (S.SUBMITTING, S.FAILED), (S.SUBMITTING, S.SUCCEEDED), (S.SUBMITTING, S.CANCELLED),
    (S.SUBMITTING, S.SKIPPED),
    (S.RUNNING, S.RUNNING), (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.FAILED),
}  # fmt: skip

B = BatchState
ENDINGS = {B.SUCCEEDED, B.PARTIALLY_FAILED, B.ABORTED, B.CANCELLED}
ALLOWED_BATCH = (
    {(B.PENDING, t) for t in {B.RUNNING, B.PAUSED, *ENDINGS}}
    | {(B.RUNNING, t) for t in {B.PAUSED, *ENDINGS}}
    | {(B.PAUSED, t) for t in {B.RUNNING, *ENDINGS}}
)


@pytest.mark.parametrize("pair", list(itertools.product(ServerState, ServerState)))
def test_every_server_pair(pair: tuple[ServerState, ServerState]) -> None:
    source, target = pair
    if pair in ALLOWED_SERVER:
        check_server_transition(source, target)
    else:
        with pytest.raises(IllegalTransition):
            check_server_transition(source, target)


@pytest.mark.parametrize("pair", list(itertools.product(BatchState, BatchState)))
def test_every_batch_pair(pair: tuple[BatchState, BatchState]) -> None:
    source, target = pair
    if pair in ALLOWED_BATCH:
        check_batch_transition(source, target)
    else:
        with pytest.raises(IllegalTransition):
            check_batch_transition(source, target)


def test_terminal_states_have_no_way_out() -> None:
    for state in ServerState:
        if state.is_terminal:
            assert not any((state, t) in ALLOWED_SERVER for t in ServerState)
    assert {s for s in ServerState if s.is_active} == {S.PENDING, S.SUBMITTING, S.RUNNING}
