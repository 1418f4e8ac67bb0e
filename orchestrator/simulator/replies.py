"""What a simulated API call answers: the success body or an `ApiError` (in one of the cloud's
error shapes), and how the answer is delivered (`Answer`: on time, late, or not at all).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.simulator.shared import JsonObject


@dataclass(frozen=True)
class ApiError:
    """An error answer: the nested `{"error": {"code", "message"}}` body of ECS, IMS and EVS,
    the API gateway's flat one when `gateway`, or, when `openstack`, the OpenStack shape EVS
    also answers, `{<code>: {"code": <status>, "message": ...}}` (`code` is then the key, such
    as `itemNotFound`)."""

    status: int
    code: str
    message: str
    gateway: bool = False
    # The flow-control 202 is documented without a `details` list, and IMS and EVS errors have
    # none; every other ECS error has one.
    with_details: bool = True
    retry_after: float | None = None  # seconds, sent as a Retry-After header when set
    openstack: bool = False

    def body(self, request_id: str) -> JsonObject:
        if self.gateway:
            return {"error_code": self.code, "error_msg": self.message, "request_id": request_id}
        if self.openstack:
            return {self.code: {"code": self.status, "message": self.message}}
        error: JsonObject = {"code": self.code, "message": self.message}
        if self.with_details:
            error["details"] = []
        return {"error": error}


# What every Cloud operation answers: the success body, or the error to send instead.
Reply = JsonObject | ApiError


@dataclass(frozen=True)
class Answer:
    """A reply and how the HTTP layer must deliver it."""

    reply: Reply
    drop: bool = False  # close the connection instead of answering (the side effect stands)
    delay_s: float = 0.0  # wait this long before answering (or dropping)


def ecs_error(code: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status=status, code=code, message=message)


def gateway_error(
    status: int, code: str, message: str, *, retry_after: float | None = None
) -> ApiError:
    return ApiError(
        status=status, code=code, message=message, gateway=True, retry_after=retry_after
    )


def invalid(message: str) -> ApiError:
    return ecs_error("Ecs.0005", message)


def server_not_found(server_id: str) -> ApiError:
    return ecs_error("Ecs.0114", f"The server {server_id} does not exist.", status=404)
