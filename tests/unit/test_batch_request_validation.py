"""Validation of the `POST /api/v1/batches` body (orchestrator.api.schemas)."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.api.schemas import (
    NO_SECRET_KEY,
    BatchPolicy,
    BatchRequest,
    Percent,
    RequestInvalid,
    parse_batch_request,
)

PROJECT = "0605767bd8b5d3f92f0ac0123456789a"
IMAGE = "e215580f-73ad-429d-b6f2-5433947433b0"
SERVER_A = "bae51750-0089-41a1-9b18-5c777978ff6d"
SERVER_B = "bae51750-0089-41a1-9b18-5c777978ff6e"
PASSWORD = "Zx9!correct-Horse"
USER_DATA = base64.b64encode(b"#cloud-config\npassword: Zx9!UserData-Secret\n").decode()


def v1_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project_id": PROJECT,
        "region": "cn-north-4",
        "servers": [SERVER_A, SERVER_B],
        "os_change": {"imageid": IMAGE, "adminpass": PASSWORD, "mode": "withStopServer"},
    }
    body.update(copy.deepcopy(changes))
    return body


def v2_body(**os_change: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"imageid": IMAGE, "metadata": {"user_data": USER_DATA}}
    spec.update(os_change)
    return v1_body(cloud_init=True, os_change=spec)


def with_os_change(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """`body` with os_change fields replaced; a value of None removes the field."""
    spec = {**body["os_change"], **fields}
    body["os_change"] = {k: v for k, v in spec.items() if v is not None}
    return body


def parse(body: object, *, key: bool = True, max_servers: int = 100_000) -> BatchRequest:
    return parse_batch_request(body, secret_key_configured=key, max_servers=max_servers)


def errors(body: object, *, key: bool = True, max_servers: int = 100_000) -> dict[str, str]:
    with pytest.raises(RequestInvalid) as caught:
        parse(body, key=key, max_servers=max_servers)
    exc = caught.value
    assert exc.code == "invalid_request"
    assert exc.message and "\n" not in exc.message
    assert exc.fields, "a rejected request names at least one field"
    assert all(isinstance(reason, str) and reason for reason in exc.fields.values())
    return exc.fields


def assert_only(fields: dict[str, str], path: str, *words: str) -> None:
    assert list(fields) == [path], fields
    for word in words:
        assert word in fields[path]


# ------------------------------------------------------------------ valid requests


def test_minimal_v1_request_parses_with_defaults() -> None:
    request = parse(v1_body())
    assert request.project_id == PROJECT
    assert request.servers == (SERVER_A, SERVER_B)
    assert request.os_change.imageid == IMAGE
    assert request.cloud_init is False
    assert request.policy == BatchPolicy()
    assert request.policy.max_in_flight == 50
    assert request.policy.poll_interval_s == 10
    assert request.policy.job_timeout_s == 1800
    assert request.policy.skip_matching is True
    assert request.notify_url is None


def test_minimal_v2_request_parses_with_only_user_data() -> None:
    request = parse(v2_body())
    assert request.cloud_init is True
    assert request.secrets() == {"user_data": USER_DATA}


def test_full_request_parses() -> None:
    body = v1_body(
        os_change={
            "imageid": IMAGE.upper(),
            "keyname": "KeyPair-350b",
            "userid": "7e25b1da389f4697a79df3a0e5bd494e",
            "metadata": {"BYOL": "true", "__system__encrypted": "1", "__system__cmkid": "k" * 36},
            "mode": "withStopServer",
            "isAutoPay": "false",
        },
        policy={
            "max_in_flight": "10%",
            "poll_interval_s": 2.5,
            "job_timeout_s": 600,
            "waves": [1, "10%", "100%"],
            "max_failures": "5%",
            "pause_after_waves": [1, 2],
            "wave_delay_s": 0,
            "skip_matching": False,
        },
        notify_url="https://hooks.example.com/reimage?x=1",
    )
    request = parse(body)
    assert request.os_change.imageid == IMAGE
    assert request.os_change.is_auto_pay == "false"
    assert request.os_change.metadata.system_encrypted == "1"
    assert request.policy.waves == (1, Percent(10), Percent(100))
    assert request.policy.pause_after_waves == (1, 2)
    assert request.notify_url == "https://hooks.example.com/reimage?x=1"


def test_request_is_frozen() -> None:
    request = parse(v1_body())
    with pytest.raises(ValidationError):
        request.region = "ap-southeast-1"


# ------------------------------------------------------------------ body and unknown fields


@pytest.mark.parametrize("payload", [[], "text", None, 3, [v1_body()]])
def test_body_must_be_an_object(payload: object) -> None:
    assert_only(errors(payload), "body", "JSON object")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (v1_body(colour="blue"), "colour"),
        (with_os_change(v1_body(), flavor="s6"), "os_change.flavor"),
        (v1_body(policy={"speed": 3}), "policy.speed"),
        (with_os_change(v1_body(), metadata={"owner": "me"}), "os_change.metadata.owner"),
    ],
)
def test_unknown_fields_are_rejected(body: dict[str, Any], path: str) -> None:
    assert_only(errors(body), path, "unknown field")


def test_unknown_field_names_stay_on_one_line() -> None:
    fields = errors(v1_body(**{"bad\nkey": 1}))
    assert list(fields) == ["bad\\nkey"]


# ------------------------------------------------------------------ project and region


@pytest.mark.parametrize("field", ["project_id", "region", "servers", "os_change"])
def test_required_top_level_fields(field: str) -> None:
    body = v1_body()
    del body[field]
    assert_only(errors(body), field, "required")


@pytest.mark.parametrize("project_id", [PROJECT, "0" * 32, "abcdef0123456789abcdef0123456789"])
def test_project_id_accepted(project_id: str) -> None:
    assert parse(v1_body(project_id=project_id)).project_id == project_id


@pytest.mark.parametrize(
    "project_id", ["", "a" * 65, "has space", "../etc", 12, "my_project-1", "A" * 32]
)
def test_project_id_rejected(project_id: object) -> None:
    assert_only(errors(v1_body(project_id=project_id)), "project_id")


@pytest.mark.parametrize(
    "region", ["cn-north-4", "ap-southeast-1", "eu-west-101", "la-south-2", "af-south-1"]
)
def test_region_accepted(region: str) -> None:
    assert parse(v1_body(region=region)).region == region


@pytest.mark.parametrize(
    "region", ["cn-north", "CN-NORTH-4", "cn_north_4", "cn-north-1234", "c-north-4", "cn-north-4\n"]
)
def test_region_rejected(region: str) -> None:
    assert_only(errors(v1_body(region=region)), "region")


# ------------------------------------------------------------------ servers


def test_servers_are_normalised_to_lower_case() -> None:
    assert parse(v1_body(servers=[SERVER_A.upper()])).servers == (SERVER_A,)


@pytest.mark.parametrize("servers", [[], "abc", {"a": 1}, None])
def test_servers_must_be_a_non_empty_list(servers: object) -> None:
    assert_only(errors(v1_body(servers=servers)), "servers")


@pytest.mark.parametrize("bad", ["web-1", 7, None, SERVER_A.replace("-", ""), "{" + SERVER_A + "}"])
def test_each_server_must_be_a_uuid(bad: object) -> None:
    fields = errors(v1_body(servers=[SERVER_A, SERVER_B, bad]))
    assert fields == {"servers[2]": "not a UUID"}


def test_duplicate_servers_name_the_first_occurrence() -> None:
    fields = errors(v1_body(servers=[SERVER_A, SERVER_B, SERVER_A.upper()]))
    assert fields == {"servers[2]": "duplicate of servers[0]"}


def test_bad_and_duplicate_servers_are_reported_together() -> None:
    fields = errors(v1_body(servers=["x", SERVER_A, SERVER_A]))
    assert fields == {"servers[0]": "not a UUID", "servers[2]": "duplicate of servers[1]"}


def test_servers_limit() -> None:
    fields = errors(v1_body(servers=[SERVER_A, SERVER_B]), max_servers=1)
    assert fields == {"servers": "at most 1 servers per batch"}


def test_many_bad_servers_give_a_bounded_error() -> None:
    with pytest.raises(RequestInvalid) as caught:
        parse(v1_body(servers=[f"bad-{i}" for i in range(1000)]))
    assert len(caught.value.fields) == 100
    assert "1000 invalid fields" in caught.value.message
    assert "first 100" in caught.value.message


# ------------------------------------------------------------------ os_change fields


def test_imageid_required() -> None:
    assert_only(errors(with_os_change(v1_body(), imageid=None)), "os_change.imageid", "required")


def test_imageid_must_be_a_uuid() -> None:
    fields = errors(with_os_change(v1_body(), imageid="ubuntu-22.04"))
    assert fields == {"os_change.imageid": "not a UUID"}


@pytest.mark.parametrize("keyname", ["", "k" * 65, "my key", "key/1", 5])
def test_keyname_rejected(keyname: object) -> None:
    body = with_os_change(v1_body(), adminpass=None, keyname=keyname)
    assert_only(errors(body), "os_change.keyname")


@pytest.mark.parametrize("userid", ["7e25b1da389f4697a79df3a0e5bd494", "z" * 32, 1])
def test_userid_must_be_32_hex(userid: object) -> None:
    assert_only(errors(with_os_change(v1_body(), userid=userid)), "os_change.userid")


@pytest.mark.parametrize(
    ("field", "value"),
    [("mode", "stopped"), ("isAutoPay", "yes"), ("isAutoPay", True)],
)
def test_fixed_value_fields(field: str, value: object) -> None:
    assert_only(errors(with_os_change(v1_body(), **{field: value})), f"os_change.{field}")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BYOL", "false"),
        ("BYOL", True),
        ("__system__encrypted", "2"),
        ("__system__encrypted", 1),
        ("__system__cmkid", "k" * 65),
        ("__system__cmkid", 42),
    ],
)
def test_metadata_values(key: str, value: object) -> None:
    body = with_os_change(v1_body(), metadata={key: value})
    assert_only(errors(body), f"os_change.metadata.{key}")


# ------------------------------------------------------------------ credentials, v1 and v2


def test_v1_accepts_keyname_alone() -> None:
    body = with_os_change(v1_body(), adminpass=None, keyname="KeyPair-350b")
    assert parse(body, key=False).secrets() == {}


def test_v1_rejects_both_adminpass_and_keyname() -> None:
    body = with_os_change(v1_body(), keyname="KeyPair-350b")
    assert_only(errors(body), "os_change", "exactly one of adminpass or keyname")


def test_v1_rejects_neither_adminpass_nor_keyname() -> None:
    body = with_os_change(v1_body(), adminpass=None)
    assert_only(errors(body), "os_change", "exactly one of adminpass or keyname")


def test_v2_rejects_both_adminpass_and_keyname() -> None:
    assert_only(errors(v2_body(adminpass=PASSWORD, keyname="kp")), "os_change", "adminpass")


def test_v2_rejects_no_credential_without_user_data() -> None:
    assert_only(errors(v2_body(metadata={})), "os_change", "user_data")


@pytest.mark.parametrize("credential", [{"keyname": "kp"}, {"adminpass": PASSWORD}])
def test_v2_accepts_a_credential_with_or_without_user_data(credential: dict[str, str]) -> None:
    assert parse(v2_body(**credential)).cloud_init is True
    assert parse(v2_body(metadata={}, **credential)).cloud_init is True


@pytest.mark.parametrize(
    "password",
    [
        "Ab1!",  # too short
        "Ab1!" * 7,  # 28 characters, too long
        "abcdefgh123",  # only two kinds
        "ABCDEFGH!!!!",  # only two kinds
        "Abcdefg1 2",  # space is not allowed
        "Abcdéfg12!",  # non-ASCII letter
        "Abcdefg12&",  # & is not in the allowed specials
    ],
)
def test_weak_adminpass_is_rejected_without_echo(password: str) -> None:
    fields = errors(with_os_change(v1_body(), adminpass=password))
    assert_only(fields, "os_change.adminpass", "too weak")
    assert password not in json.dumps(fields)


@pytest.mark.parametrize("password", ["abcDEF123", "abc-123-xyz", "A1!a1!a1!", "Zz9[{}]:,./?~#*"])
def test_complex_adminpass_is_accepted(password: str) -> None:
    assert parse(with_os_change(v1_body(), adminpass=password)).secrets() == {"adminpass": password}


def test_user_data_needs_cloud_init() -> None:
    body = with_os_change(v1_body(), metadata={"user_data": USER_DATA})
    assert_only(errors(body), "os_change.metadata.user_data", "cloud_init")


@pytest.mark.parametrize("user_data", ["not base64!", "abc", "", 12])
def test_user_data_must_be_base64(user_data: object) -> None:
    assert_only(errors(v2_body(metadata={"user_data": user_data})), "os_change.metadata.user_data")


def test_user_data_size_limit() -> None:
    at_limit = base64.b64encode(b"x" * 32768).decode()
    assert parse(v2_body(metadata={"user_data": at_limit})).cloud_init is True
    over = base64.b64encode(b"x" * 32769).decode()
    fields = errors(v2_body(metadata={"user_data": over}))
    assert fields == {
        "os_change.metadata.user_data": "oversized: 32769 bytes decoded, at most 32768"
    }


def test_adminpass_refused_without_secret_key() -> None:
    assert errors(v1_body(), key=False) == {"os_change.adminpass": NO_SECRET_KEY}


def test_user_data_refused_without_secret_key() -> None:
    assert errors(v2_body(), key=False) == {"os_change.metadata.user_data": NO_SECRET_KEY}


@pytest.mark.parametrize("cloud_init", ["yes", "true", 1, None])
def test_cloud_init_is_a_strict_bool(cloud_init: object) -> None:
    assert_only(errors(v1_body(cloud_init=cloud_init)), "cloud_init")


# ------------------------------------------------------------------ policy


@pytest.mark.parametrize(
    ("value", "expected"), [(1, 1), (500, 500), ("1%", Percent(1)), ("100%", Percent(100))]
)
def test_max_in_flight_accepted(value: object, expected: object) -> None:
    assert parse(v1_body(policy={"max_in_flight": value})).policy.max_in_flight == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_in_flight", "10"),
        ("max_in_flight", True),
        ("max_in_flight", 0),
        ("max_in_flight", "0%"),
        ("max_in_flight", "101%"),
        ("max_in_flight", 2.0),
        ("poll_interval_s", 0.5),
        ("poll_interval_s", 3601),
        ("poll_interval_s", True),
        ("poll_interval_s", "10"),
        ("poll_interval_s", float("nan")),
        ("job_timeout_s", 59),
        ("job_timeout_s", 86401),
        ("job_timeout_s", 600.0),
        ("job_timeout_s", True),
        ("waves", []),
        ("waves", "10%"),
        ("max_failures", -1),
        ("max_failures", "101%"),
        ("max_failures", False),
        ("pause_after_waves", "yes"),
        ("wave_delay_s", -1),
        ("wave_delay_s", 86401),
        ("skip_matching", "true"),
    ],
)
def test_policy_value_rejected(field: str, value: object) -> None:
    assert_only(errors(v1_body(policy={field: value})), f"policy.{field}")


def test_policy_list_items_are_checked_one_by_one() -> None:
    fields = errors(v1_body(policy={"waves": [1, "0%", 3], "pause_after_waves": [1, 0, True]}))
    assert set(fields) == {
        "policy.waves[1]",
        "policy.pause_after_waves[1]",
        "policy.pause_after_waves[2]",
    }


def test_failure_limit_accepts_zero() -> None:
    policy = parse(v1_body(policy={"max_failures": 0, "pause_after_waves": True})).policy
    assert policy.max_failures == 0
    assert parse(v1_body(policy={"max_failures": "0%"})).policy.max_failures == Percent(0)
    assert policy.pause_after_waves is True


# ------------------------------------------------------------------ notify_url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "https://user:pw@example.com/hook",
        "https://token@example.com/hook",
        "example.com/hook",
        "https://",
        "https://example.com:99999/",
        "https://example.com/a b",
        42,
    ],
)
def test_notify_url_rejected(url: object) -> None:
    assert_only(errors(v1_body(notify_url=url)), "notify_url")


# ------------------------------------------------------------------ collecting, secrets, hashing


def test_every_problem_is_reported_at_once() -> None:
    body = v1_body(region="north", servers=[SERVER_A, "nope"])
    body = with_os_change(body, imageid="nope")
    fields = errors(body)
    assert set(fields) == {"region", "servers[1]", "os_change.imageid"}


def test_combination_rules_are_reported_beside_field_errors() -> None:
    body = with_os_change(v1_body(region="north"), adminpass=None, imageid="nope")
    assert set(errors(body)) == {"region", "os_change.imageid", "os_change"}


def test_secrets_never_appear_in_repr_str_or_dumps() -> None:
    request = parse(v2_body(adminpass=PASSWORD))
    assert request.secrets() == {"adminpass": PASSWORD, "user_data": USER_DATA}
    renderings = [
        repr(request),
        str(request),
        request.model_dump_json(),
        str(request.model_dump()),
        json.dumps(request.model_dump(mode="json")),
        str(request.os_change),
        json.dumps(request.public_os_change()),
        request.canonical_fingerprint(),
    ]
    for text in renderings:
        assert PASSWORD not in text
        assert USER_DATA not in text


def test_rejected_secrets_are_not_echoed() -> None:
    body = v2_body(adminpass="weakpass", keyname="kp")
    with pytest.raises(RequestInvalid) as caught:
        parse(body, key=False)
    assert "weakpass" not in str(caught.value) + json.dumps(caught.value.fields)
    assert caught.value.__context__ is None


def test_public_os_change_is_the_cloud_body_without_secrets() -> None:
    spec = {
        "imageid": IMAGE,
        "keyname": "kp",
        "userid": "7e25b1da389f4697a79df3a0e5bd494e",
        "metadata": {"BYOL": "true", "__system__encrypted": "0", "user_data": USER_DATA},
        "mode": "withStopServer",
        "isAutoPay": "true",
    }
    request = parse(v1_body(cloud_init=True, os_change=spec))
    expected = {k: v for k, v in spec.items() if k != "metadata"}
    expected["metadata"] = {"BYOL": "true", "__system__encrypted": "0"}
    assert request.public_os_change() == expected


def test_public_os_change_leaves_out_absent_fields() -> None:
    assert parse(v1_body()).public_os_change() == {"imageid": IMAGE, "mode": "withStopServer"}


def test_fingerprint_is_canonical() -> None:
    first = parse(v1_body()).canonical_fingerprint()
    assert len(first) == 64 and int(first, 16) >= 0
    reordered = dict(reversed(list(v1_body(policy={"max_in_flight": 50}).items())))
    assert parse(reordered).canonical_fingerprint() == first
    other_password = with_os_change(v1_body(), adminpass=PASSWORD + "x")
    assert parse(other_password).canonical_fingerprint() != first
    assert parse(v1_body(region="af-south-1")).canonical_fingerprint() != first
    keyed = parse(v1_body()).canonical_fingerprint(key=b"server-secret")
    assert keyed != first
    assert parse(v1_body()).canonical_fingerprint(key=b"server-secret") == keyed


@settings(max_examples=50, deadline=None)
@given(st.lists(st.uuids(), min_size=1, max_size=50, unique=True), st.booleans())
def test_any_distinct_uuids_parse_in_order(servers: list[uuid.UUID], upper: bool) -> None:
    given_ids = [str(s).upper() if upper else str(s) for s in servers]
    request = parse(v1_body(servers=given_ids))
    assert request.servers == tuple(str(s) for s in servers)


# --- per-architecture images and on_incompatible ----------------------------------------


ARM_IMAGE = "0b1e2d3c-4f5a-4b6c-8d7e-9f0a1b2c3d4e"


def test_images_per_architecture_replace_imageid() -> None:
    body = with_os_change(v1_body(), imageid=None, images={"x86_64": IMAGE, "aarch64": ARM_IMAGE})
    request = parse(body)
    assert request.public_os_change()["images"] == {"x86_64": IMAGE, "aarch64": ARM_IMAGE}
    assert "imageid" not in request.public_os_change()
    only_arm = parse(with_os_change(v1_body(), imageid=None, images={"aarch64": ARM_IMAGE}))
    assert only_arm.public_os_change()["images"] == {"aarch64": ARM_IMAGE}


@pytest.mark.parametrize(
    ("images", "path", "words"),
    [
        ({"x86_64": IMAGE, "sparc": IMAGE}, "os_change.images.sparc", "unknown field"),
        ({}, "os_change.images", "x86_64, aarch64"),
        ({"aarch64": "arm"}, "os_change.images.aarch64", "UUID"),
    ],
)
def test_bad_images_name_the_field(images: dict[str, str], path: str, words: str) -> None:
    fields = errors(with_os_change(v1_body(), imageid=None, images=images))
    assert words in fields[path], fields


def test_imageid_and_images_together_is_refused() -> None:
    body = with_os_change(v1_body(), images={"x86_64": IMAGE})
    assert_only(errors(body), "os_change.images", "not both")


def test_on_incompatible_is_reject_or_skip() -> None:
    assert parse(v1_body()).policy.on_incompatible == "reject"
    assert parse(v1_body(policy={"on_incompatible": "skip"})).policy.on_incompatible == "skip"
    fields = errors(v1_body(policy={"on_incompatible": "ignore"}))
    assert list(fields) == ["policy.on_incompatible"]


# ------------------------------------------------------------------ health gate and backup


def with_policy(**policy: Any) -> dict[str, Any]:
    return with_os_change(v1_body(policy=policy), adminpass=None, keyname="ops-key")


def test_a_health_check_rollback_and_backup_parse_with_defaults() -> None:
    parsed = parse(
        with_policy(
            health_check={"tcp": "{ip}:22"},
            on_unhealthy="rollback",
            backup={"mode": "image"},
        )
    )
    stored = parsed.policy.model_dump(mode="json")
    assert stored["health_check"] == {
        "http": None,
        "tcp": "{ip}:22",
        "initial_delay_s": 120.0,
        "interval_s": 10.0,
        "timeout_s": 5.0,
        "successes": 1,
        "deadline_s": 900.0,
    }
    assert stored["backup"] == {"mode": "image", "retention_s": 604800}
    assert stored["on_unhealthy"] == "rollback"


@pytest.mark.parametrize(
    ("policy", "path", "words"),
    [
        ({"on_unhealthy": "rollback"}, "policy.on_unhealthy", ["health_check"]),
        ({"on_unhealthy": "retry"}, "policy.on_unhealthy", []),
        ({"health_check": {}}, "policy.health_check.http", ["tcp"]),
        (
            {"health_check": {"http": "http://{ip}/", "tcp": "{ip}:22"}},
            "policy.health_check.http",
            ["one of"],
        ),
        ({"health_check": {"http": "http://{addr}/"}}, "policy.health_check.http", ["addr"]),
        ({"health_check": {"http": "ftp://{ip}/"}}, "policy.health_check.http", ["http://"]),
        ({"health_check": {"http": "http://u:p@{ip}/"}}, "policy.health_check.http", ["cred"]),
        ({"health_check": {"tcp": "{ip}"}}, "policy.health_check.tcp", ["port"]),
        (
            {"health_check": {"http": "http://169.254.169.254/{server_id}"}},
            "policy.health_check.http",
            ["ORCH_HEALTH_ALLOWED_HOSTS"],
        ),
        (
            {"health_check": {"tcp": "{ip}:22", "initial_delay_s": 60, "deadline_s": 30}},
            "policy.health_check.deadline_s",
            ["initial_delay_s"],
        ),
        ({"health_check": {"tcp": "{ip}:22", "successes": 0}}, "policy.health_check.successes", []),
        ({"backup": {"mode": "snapshot"}}, "policy.backup.mode", []),
        ({"backup": {"mode": "image", "retention_s": 0}}, "policy.backup.retention_s", []),
    ],
)
def test_bad_health_checks_and_backups_name_the_field(
    policy: dict[str, Any], path: str, words: list[str]
) -> None:
    assert_only(errors(with_policy(**policy)), path, *words)


def test_an_allowed_fixed_host_is_accepted() -> None:
    body = with_policy(health_check={"http": "https://probe.ops.example.com/check/{server_id}"})
    parsed = parse_batch_request(
        body, secret_key_configured=True, health_allowed_hosts=["*.ops.example.com"]
    )
    assert parsed.policy.health_check is not None


@pytest.mark.parametrize(
    "project_id", ["BAD", "0605767bd8b5d3f92f0ac0123456789", "0605767BD8B5D3F92F0AC0123456789A"]
)
def test_a_project_id_is_32_lowercase_hex_digits(project_id: str) -> None:
    # A typo used to be accepted (202) and only paused the batch when a worker called the cloud.
    with pytest.raises(RequestInvalid) as caught:
        parse(v1_body(project_id=project_id))
    assert "32 lowercase hex" in caught.value.fields["project_id"]


def test_a_region_must_be_one_the_service_knows() -> None:
    from orchestrator.config import load_settings

    settings = load_settings()
    body = v1_body(region="cn-nort-4")
    assert parse(body).region == "cn-nort-4"  # well formed: without a region list, accepted
    with pytest.raises(RequestInvalid) as caught:
        parse_batch_request(
            body, secret_key_configured=True, accepts_region=settings.accepts_region
        )
    assert caught.value.fields == {"region": caught.value.fields["region"]}
    assert "ORCH_REGIONS" in caught.value.fields["region"]
    accepted = parse_batch_request(
        v1_body(region="eu-west-101"),
        secret_key_configured=True,
        accepts_region=settings.accepts_region,
    )
    assert accepted.region == "eu-west-101"
    # ORCH_REGIONS replaces the list; a region with its own endpoint is always accepted.
    private = load_settings(regions=["xx-private-1"], ecs_endpoints={"yy-lab-2": "http://lab"})
    assert private.accepts_region("xx-private-1") and private.accepts_region("yy-lab-2")
    assert not private.accepts_region("cn-north-4")
