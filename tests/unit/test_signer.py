"""The signer and verifier agree with every request the official SDK sent, and Huawei's example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cloud import signer

# Captured from the official SDK; this repository carries its own copy in tests/data/.
VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "sdk-signing-vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text())["vectors"]


def _body(vector: dict[str, Any]) -> bytes:
    body = vector["request"].get("body")
    return body.encode() if body else b""


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_signer_reproduces_the_sdk_authorization(vector: dict[str, Any]) -> None:
    request = vector["request"]
    signed = vector["sdk_trace"]["signed_headers"].split(";")
    headers = {k: v for k, v in request["headers"] if k.lower() in signed}
    auth = signer.authorization_header(
        access_key=vector["ak"],
        secret_key=vector["sk"],
        method=request["method"],
        path=request["path"],
        query=[(k, v) for k, v in request["query_params"]],
        headers=headers,
        body=_body(vector),
    )
    assert auth == vector["authorization"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_verifier_accepts_what_the_sdk_sent(vector: dict[str, Any]) -> None:
    request = vector["request"]
    headers = dict(request["headers"])
    assert (
        signer.verify(
            authorization=vector["authorization"],
            secret_key_for={vector["ak"]: vector["sk"]},
            method=request["method"],
            raw_path=request["raw_path"],
            raw_query=request["query"],
            headers=headers,
            body=_body(vector),
        )
        is None
    )


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_verifier_rejects_tampering(vector: dict[str, Any]) -> None:
    request = vector["request"]
    common: dict[str, Any] = {
        "authorization": vector["authorization"],
        "method": request["method"],
        "raw_query": request["query"],
        "headers": dict(request["headers"]),
        "body": _body(vector),
    }
    wrong_key = {vector["ak"]: vector["sk"] + "x"}
    assert signer.verify(secret_key_for=wrong_key, raw_path=request["raw_path"], **common)
    right_key = {vector["ak"]: vector["sk"]}
    path, _, glued = request["raw_path"].partition("?")
    tampered = path + "x" + ("?" + glued if glued else "")
    assert signer.verify(secret_key_for=right_key, raw_path=tampered, **common)
    assert signer.verify(secret_key_for={}, raw_path=request["raw_path"], **common)


def test_canonical_request_matches_sdk_trace() -> None:
    vector = next(v for v in VECTORS if v["name"] == "list_servers_details_query")
    request = vector["request"]
    assert signer.canonical_uri(request["path"]).endswith("/detail/")
    assert signer.canonical_query(request["query_params"]) == request["query"]


def test_huawei_published_example() -> None:
    headers = {
        "content-type": "application/json",
        "host": "service.region.example.com",
        "x-sdk-date": "20191115T033655Z",
    }
    text = signer.string_to_sign(
        "GET",
        "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs",
        [("limit", "2"), ("marker", "13551d6b-755d-4757-b956-536f674975c0")],
        headers,
        sorted(headers),
        b"",
        "20191115T033655Z",
    )
    assert (
        signer.signature("MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc", text)
        == "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
    )


def test_malformed_authorization_is_explained() -> None:
    reason = signer.verify(
        authorization="Basic abc",
        secret_key_for={},
        method="GET",
        raw_path="/",
        raw_query="",
        headers={},
        body=b"",
    )
    assert reason == "malformed Authorization header"
