"""An ECS look-alike the official Huawei SDK cannot tell from the cloud, for demos, tests and
benchmarks, with deterministic server conditions and seeded faults for rollout-control tests.

`cloud` is the pure in-memory model (and the one import callers need); it is built from
`config` (SimulatorConfig), `validation` (changeos bodies), `servers` (server state, the
ShowServer body, listing), `jobs` (job timelines, ShowJob), `faults` (throttling and injected
faults), `inventory` (server specs from JSON or generated), `images` and `ims` (the image
catalog, IMS ListImages), `backups`, `image_requests` and `image_jobs` (IMS images made from
servers: CreateImage, its job, the quota, deletion), `health` (the per-server health a health
gate probes), `flavors` (the flavor catalog, ListFlavors), `volumes` (EVS system disks),
`compatibility` (which changes of OS Huawei's rules allow) and `replies`/`shared` (answers, ids,
hashes, timestamps). `app` is the aiohttp front that checks signatures and
routes requests to the model, `cli` the `reimage simulate` command.
"""
