"""The official Huawei SDK as a test client of the simulator: where it may write, no proxy in
the way, and a client of any of its services (ECS, IMS, EVS) built for one endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def prepare_sdk(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Before the SDK is imported: HOME (which it writes to) and proxies made harmless."""
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def sdk_client(
    client_class: Any,
    endpoint: str,
    *,
    ak: str,
    sk: str,
    project_id: str,
    ca_file: str | Path | None = None,
) -> Any:
    """`client_class` (e.g. `huaweicloudsdkims.v2.ImsClient`) signed with AK/SK for a project;
    `ca_file`: the CA (PEM) an https endpoint is verified against (`HttpConfig.ssl_ca_cert`,
    verification left on)."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig

    config = HttpConfig.get_default_config()
    if ca_file is not None:
        config.ssl_ca_cert = str(ca_file)
    return (
        client_class.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(ak, sk, project_id))
        .with_endpoints([endpoint])
        .build()
    )
