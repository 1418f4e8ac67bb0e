"""Server, batch and webhook-delivery states, the one transition table for each, and the guards
that check them."""

from __future__ import annotations

from enum import StrEnum


class ServerState(StrEnum):
    PENDING = "pending"
    SUBMITTING = "submitting"
    # Its system disk is being saved as an IMS image (policy.backup) before its changeos.
    BACKING_UP = "backing_up"
    RUNNING = "running"
    # The change is applied; the health gate probes the new OS before it counts as done.
    VERIFYING = "verifying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_SERVER_STATES

    @property
    def is_active(self) -> bool:
        """Pending or in flight: the server belongs to this batch and no other."""
        return self in ACTIVE_SERVER_STATES


TERMINAL_SERVER_STATES = frozenset(
    {ServerState.SUCCEEDED, ServerState.FAILED, ServerState.CANCELLED, ServerState.SKIPPED}
)
ACTIVE_SERVER_STATES = frozenset(
    {
        ServerState.PENDING,
        ServerState.SUBMITTING,
        ServerState.BACKING_UP,
        ServerState.RUNNING,
        ServerState.VERIFYING,
    }
)
# Active, past pending: each takes one of the batch's in-flight slots.
IN_FLIGHT_SERVER_STATES = ACTIVE_SERVER_STATES - {ServerState.PENDING}
# The states whose servers carry the code of what stopped them (a failed change, a server
# pre-flight refused, one cancelled after a refused call): counted per code for each batch.
STATES_WITH_A_CODE = frozenset({ServerState.FAILED, ServerState.SKIPPED, ServerState.CANCELLED})

# Self-transitions record nuance without a new state: a retry scheduled after a 429, an
# outcome that became unknown, the cloud job changing status.
SERVER_TRANSITIONS: dict[ServerState, frozenset[ServerState]] = {
    ServerState.PENDING: frozenset(
        {ServerState.SUBMITTING, ServerState.CANCELLED, ServerState.SKIPPED}
    ),
    ServerState.SUBMITTING: frozenset(
        {
            ServerState.SUBMITTING,
            # released before any call was sent (paused batch, bad credentials)
            ServerState.PENDING,
            ServerState.RUNNING,
            ServerState.FAILED,
            # the backup image before the change was asked for (policy.backup)
            ServerState.BACKING_UP,
            # reconciliation found the change already applied: succeeded, or (with a health
            # check) verifying
            ServerState.SUCCEEDED,
            ServerState.VERIFYING,
            # never sent: cancelled, or already on the target image
            ServerState.CANCELLED,
            ServerState.SKIPPED,
        }
    ),
    ServerState.BACKING_UP: frozenset(
        {
            ServerState.BACKING_UP,
            # the image is active: the changeos may go now
            ServerState.SUBMITTING,
            # the backup failed or was refused: no change is sent
            ServerState.FAILED,
        }
    ),
    ServerState.RUNNING: frozenset(
        {ServerState.RUNNING, ServerState.SUCCEEDED, ServerState.FAILED, ServerState.VERIFYING}
    ),
    ServerState.VERIFYING: frozenset(
        {
            ServerState.VERIFYING,
            ServerState.SUCCEEDED,
            ServerState.FAILED,
            # unhealthy with policy.on_unhealthy "rollback": its changeos back to the previous
            # image goes through submitting like any other
            ServerState.SUBMITTING,
        }
    ),
    ServerState.SUCCEEDED: frozenset(),
    ServerState.FAILED: frozenset(),
    ServerState.CANCELLED: frozenset(),
    ServerState.SKIPPED: frozenset(),
}


class BatchState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    PARTIALLY_FAILED = "partially_failed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_BATCH_STATES


TERMINAL_BATCH_STATES = frozenset(
    {
        BatchState.SUCCEEDED,
        BatchState.PARTIALLY_FAILED,
        BatchState.ABORTED,
        BatchState.CANCELLED,
    }
)

BATCH_TRANSITIONS: dict[BatchState, frozenset[BatchState]] = {
    BatchState.PENDING: frozenset({BatchState.RUNNING, BatchState.PAUSED} | TERMINAL_BATCH_STATES),
    BatchState.RUNNING: frozenset({BatchState.PAUSED} | TERMINAL_BATCH_STATES),
    BatchState.PAUSED: frozenset({BatchState.RUNNING} | TERMINAL_BATCH_STATES),
    BatchState.SUCCEEDED: frozenset(),
    BatchState.PARTIALLY_FAILED: frozenset(),
    BatchState.ABORTED: frozenset(),
    BatchState.CANCELLED: frozenset(),
}


class DeliveryState(StrEnum):
    """A webhook delivery: retried while `pending`, then delivered or given up."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


DELIVERY_TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    DeliveryState.PENDING: frozenset({DeliveryState.DELIVERED, DeliveryState.FAILED}),
    DeliveryState.DELIVERED: frozenset(),
    DeliveryState.FAILED: frozenset(),
}


class IllegalTransition(Exception):
    """A state change the transition table does not allow."""

    def __init__(self, kind: str, from_state: str, to_state: str) -> None:
        super().__init__(f"{kind} cannot go from {from_state} to {to_state}")
        self.from_state = from_state
        self.to_state = to_state


def check_server_transition(from_state: ServerState, to_state: ServerState) -> None:
    if to_state not in SERVER_TRANSITIONS[from_state]:
        raise IllegalTransition("server", from_state, to_state)


def check_batch_transition(from_state: BatchState, to_state: BatchState) -> None:
    if to_state not in BATCH_TRANSITIONS[from_state]:
        raise IllegalTransition("batch", from_state, to_state)


def check_delivery_transition(from_state: DeliveryState, to_state: DeliveryState) -> None:
    if to_state not in DELIVERY_TRANSITIONS[from_state]:
        raise IllegalTransition("webhook delivery", from_state, to_state)


# The cloud's job statuses that are an end (ECS job API): a server whose job shows one waits only
# for its own check.
FINAL_JOB_STATUSES = frozenset({"SUCCESS", "FAIL"})
