"""Approvals, four eyes (issue 15, part 4): how many distinct approvers a gate needs, and who
may approve. Pure.

`policy.approvals: {"before_start": n, "after_waves": [1, 2], "required": m}`: the batch waits
(paused, reason `awaiting_approval`) before its first wave until `n` people approve, and after
each listed wave until `m` do. Approvers are counted once each, and never the submitter: the
anchor is AWS SSM's `aws:approve` with `MinRequiredApprovals`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

BEFORE_START = 0  # the gate before the first wave; gate k > 0 follows wave k


@dataclass(frozen=True)
class ApprovalPolicy:
    before_start: int = 0
    after_waves: tuple[int, ...] = ()
    required: int = 1

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ApprovalPolicy | None:
        if not data:
            return None
        return cls(
            before_start=int(data.get("before_start") or 0),
            after_waves=tuple(int(w) for w in data.get("after_waves") or ()),
            required=int(data.get("required") or 1),
        )

    def needed(self, gate: int) -> int:
        """Approvals gate `gate` needs (0: none, the batch does not stop there)."""
        if gate == BEFORE_START:
            return self.before_start
        return self.required if gate in self.after_waves else 0


def approval_refusal(
    *, principal: str, submitter: str | None, already: Collection[str]
) -> str | None:
    """Why this approval does not count (None: it does)."""
    if submitter is not None and principal == submitter:
        return "the batch's submitter cannot approve it: a second person must"
    if principal in already:
        return f"{principal} has already approved this gate"
    return None


def gate_open(approvers: Collection[str], needed: int) -> bool:
    return len(set(approvers)) >= needed
