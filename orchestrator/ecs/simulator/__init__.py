"""An ECS look-alike the official Huawei SDK cannot tell from the cloud, for demos, tests and
benchmarks.

`cloud` is the pure in-memory model (servers, changeos jobs, throttling, counters), `app` the
aiohttp front that checks signatures and routes requests to it, `cli` the `reimage simulate`
command.
"""
