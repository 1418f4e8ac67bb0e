"""Every (from, to) pair of the three transition tables (servers, batches, webhook deliveries),
checked against the intended table written out here, and the code's tables equal to it."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from orchestrator.domain.states import (
    BATCH_TRANSITIONS,
    DELIVERY_TRANSITIONS,
    SERVER_TRANSITIONS,
    BatchState,
    DeliveryState,
    IllegalTransition,
    ServerState,
    check_batch_transition,
    check_delivery_transition,
    check_server_transition,
)

S = ServerState
ALLOWED_SERVER = {
    (S.PENDING, S.SUBMITTING), (S.PENDING, S.CANCELLED), (S.PENDING, S.SKIPPED),
    (S.SUBMITTING, S.SUBMITTING), (S.SUBMITTING, S.PENDING), (S.SUBMITTING, S.RUNNING),
    (S.SUBMITTING, S.FAILED), (S.SUBMITTING, S.SUCCEEDED), (S.SUBMITTING, S.CANCELLED),
    (S.SUBMITTING, S.SKIPPED), (S.SUBMITTING, S.BACKING_UP), (S.SUBMITTING, S.VERIFYING),
    (S.BACKING_UP, S.BACKING_UP), (S.BACKING_UP, S.SUBMITTING), (S.BACKING_UP, S.FAILED),
    (S.RUNNING, S.RUNNING), (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.FAILED),
    (S.RUNNING, S.VERIFYING),
    (S.VERIFYING, S.VERIFYING), (S.VERIFYING, S.SUCCEEDED), (S.VERIFYING, S.FAILED),
    (S.VERIFYING, S.SUBMITTING),
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


D = DeliveryState
ALLOWED_DELIVERY = {(D.PENDING, D.DELIVERED), (D.PENDING, D.FAILED)}


def pairs(table: dict[Any, frozenset[Any]]) -> set[tuple[Any, Any]]:
    return {(source, target) for source, targets in table.items() for target in targets}


def test_the_code_tables_are_the_intended_ones() -> None:
    assert pairs(SERVER_TRANSITIONS) == ALLOWED_SERVER
    assert pairs(BATCH_TRANSITIONS) == ALLOWED_BATCH
    assert pairs(DELIVERY_TRANSITIONS) == ALLOWED_DELIVERY
    assert set(SERVER_TRANSITIONS) == set(ServerState)
    assert set(BATCH_TRANSITIONS) == set(BatchState)
    assert set(DELIVERY_TRANSITIONS) == set(DeliveryState)


@pytest.mark.parametrize("pair", list(itertools.product(DeliveryState, DeliveryState)))
def test_every_delivery_pair(pair: tuple[DeliveryState, DeliveryState]) -> None:
    source, target = pair
    if pair in ALLOWED_DELIVERY:
        check_delivery_transition(source, target)
    else:
        with pytest.raises(IllegalTransition):
            check_delivery_transition(source, target)


def test_terminal_states_have_no_way_out() -> None:
    for state in ServerState:
        if state.is_terminal:
            assert not SERVER_TRANSITIONS[state], state
    for batch_state in BatchState:
        if batch_state.is_terminal:
            assert not BATCH_TRANSITIONS[batch_state], batch_state
    assert {s for s in ServerState if s.is_active} == {
        S.PENDING,
        S.SUBMITTING,
        S.BACKING_UP,
        S.RUNNING,
        S.VERIFYING,
    }
