"""The peer: what a user would write without reimage. The official Huawei SDK in a pool of
threads; each thread sends one server's changeos (backing off exponentially on 429), then polls
its job at a fixed interval until it ends. Prints one JSON line with its figures.

    python benchmarks/sdk_peer.py --endpoint https://127.0.0.1:8700 --ak AK --sk SK \
        --project-id PID --image UUID --servers-file ids.txt [--threads 50] [--poll-s 0.5] \
        [--ca-file ca.pem]

`--ca-file`: the CA certificates (PEM) the endpoint's certificate is verified against, given to
the SDK as `HttpConfig.ssl_ca_cert` (verification stays on, as a user's script would keep it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def build_client(args: argparse.Namespace) -> Any:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkecs.v2 import EcsClient

    config = HttpConfig.get_default_config()
    config.timeout = (5, 30)
    if args.ca_file:
        config.ssl_ca_cert = args.ca_file
    return (
        EcsClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(args.ak, args.sk, args.project_id))
        .with_endpoints([args.endpoint])
        .build()
    )


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values = {"calls": 0, "throttled": 0, "succeeded": 0, "failed": 0, "errors": 0}

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.values[name] += n


def with_backoff(call: Any, counters: Counters) -> Any:
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

    delay = 0.5
    while True:
        counters.add("calls")
        try:
            return call()
        except ClientRequestException as exc:
            if exc.status_code != 429:
                raise
            counters.add("throttled")
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 30.0)


def reimage_one(client: Any, server_id: str, args: argparse.Namespace, counters: Counters) -> None:
    from huaweicloudsdkecs.v2 import (
        ChangeServerOsWithoutCloudInitOption,
        ChangeServerOsWithoutCloudInitRequest,
        ChangeServerOsWithoutCloudInitRequestBody,
        ShowJobRequest,
    )

    request = ChangeServerOsWithoutCloudInitRequest(
        server_id=server_id,
        body=ChangeServerOsWithoutCloudInitRequestBody(
            os_change=ChangeServerOsWithoutCloudInitOption(
                imageid=args.image,
                keyname="KeyPair-peer",
                userid="7e25b1da389f4697a79df3a0e5bd494e",
                mode="withStopServer",
            )
        ),
    )
    try:
        job_id = with_backoff(
            lambda: client.change_server_os_without_cloud_init(request), counters
        ).job_id
        while True:
            time.sleep(args.poll_s)
            job = with_backoff(lambda: client.show_job(ShowJobRequest(job_id=job_id)), counters)
            if job.status in ("SUCCESS", "FAIL"):
                counters.add("succeeded" if job.status == "SUCCESS" else "failed")
                return
    except Exception:  # a user's script logs and moves on
        counters.add("errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--ak", required=True)
    parser.add_argument("--sk", required=True)
    parser.add_argument("--project-id", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--servers-file", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--poll-s", type=float, default=0.5)
    parser.add_argument("--ca-file", default=None, help="CA bundle (PEM) for an https endpoint")
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    # The SDK logs every exhausted retry; the figures are what this script is for.
    logging.getLogger("HuaweiCloudSDK").setLevel(logging.CRITICAL)
    logging.disable(logging.ERROR)
    servers = args.servers_file.read_text().split()
    client = build_client(args)
    counters = Counters()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        for server_id in servers:
            pool.submit(reimage_one, client, server_id, args, counters)
    wall = time.monotonic() - started
    print(json.dumps({"wall_s": wall, **counters.values}))


if __name__ == "__main__":
    main()
