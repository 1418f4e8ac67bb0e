"""The health gate's pure parts (domain/health): templates, allowed hosts, and the verdict of
the probes so far on an advancing clock (issue 14, part 1)."""

from __future__ import annotations

import pytest

from orchestrator.domain.health import (
    Health,
    HealthCheck,
    Probe,
    ProbeKind,
    ProbeTarget,
    TargetError,
    expand,
    health_verdict,
    template_problem,
)

SERVER = ProbeTarget(server_id="s-1", name="web-01", ip="192.168.0.7", floating_ip=None)
CHECK = HealthCheck(
    ProbeKind.HTTP, "http://{ip}:8080/healthz", initial_delay_s=120, interval_s=10, successes=2
)


def probes(*outcomes: tuple[float, bool]) -> list[Probe]:
    return [Probe(at, ok, "200" if ok else "503") for at, ok in outcomes]


def test_no_probe_before_the_initial_delay() -> None:
    verdict = health_verdict(CHECK, ended_at=1000, now=1050, probes=[])
    assert (verdict.health, verdict.next_probe_at) == (Health.WARMING_UP, 1120)
    due = health_verdict(CHECK, ended_at=1000, now=1120, probes=[])
    assert (due.health, due.next_probe_at) == (Health.PROBE_DUE, 1120)


def test_probes_come_every_interval_and_healthy_needs_successes_in_a_row() -> None:
    after_one = health_verdict(CHECK, ended_at=1000, now=1121, probes=probes((1120, True)))
    assert (after_one.health, after_one.next_probe_at, after_one.streak) == (
        Health.PROBE_DUE,
        1130,
        1,
    )
    broken_streak = probes((1120, True), (1130, False), (1140, True))
    assert health_verdict(CHECK, ended_at=1000, now=1141, probes=broken_streak).streak == 1
    two = probes((1120, False), (1130, True), (1140, True))
    assert health_verdict(CHECK, ended_at=1000, now=1141, probes=two).health is Health.HEALTHY


def test_not_healthy_by_the_deadline_is_unhealthy_and_the_last_probe_is_due_at_it() -> None:
    check = HealthCheck(ProbeKind.TCP, "{ip}:22", initial_delay_s=0, interval_s=60, deadline_s=90)
    late = health_verdict(check, ended_at=0, now=61, probes=probes((0, False), (60, False)))
    assert (late.health, late.next_probe_at) == (Health.PROBE_DUE, 90)
    assert health_verdict(check, ended_at=0, now=90, probes=probes((0, False))).health is (
        Health.UNHEALTHY
    )


def test_a_healthy_streak_read_after_the_deadline_still_counts() -> None:
    check = HealthCheck(ProbeKind.TCP, "{ip}:22", initial_delay_s=0, deadline_s=30)
    assert health_verdict(check, ended_at=0, now=31, probes=probes((29, True))).health is (
        Health.HEALTHY
    )


def test_templates_expand_placeholders_and_allow_only_the_servers_hosts_or_listed_ones() -> None:
    assert expand(ProbeKind.HTTP, CHECK.target, SERVER, []) == "http://192.168.0.7:8080/healthz"
    assert expand(ProbeKind.TCP, "{name}:22", SERVER, []) == "web-01:22"
    listed = "https://health.ops.example.com/check/{server_id}"
    assert expand(ProbeKind.HTTP, listed, SERVER, ["*.ops.example.com"]).endswith("/check/s-1")
    with pytest.raises(TargetError, match="ORCH_HEALTH_ALLOWED_HOSTS"):
        expand(ProbeKind.HTTP, "http://169.254.169.254/latest/{server_id}", SERVER, [])
    with pytest.raises(TargetError, match="no floating_ip"):
        expand(ProbeKind.TCP, "{floating_ip}:22", SERVER, [])


@pytest.mark.parametrize(
    ("kind", "template", "words"),
    [
        (ProbeKind.HTTP, "http://{addr}/", "unknown placeholder"),
        (ProbeKind.HTTP, "ftp://{ip}/", "http:// or https://"),
        (ProbeKind.HTTP, "http://u:p@{ip}/", "credentials"),
        (ProbeKind.TCP, "{ip}", "host:port"),
        (ProbeKind.TCP, "{ip}:70000", "host:port"),
    ],
)
def test_unusable_templates_are_refused_up_front(
    kind: ProbeKind, template: str, words: str
) -> None:
    problem = template_problem(kind, template)
    assert problem is not None and words in problem
    assert template_problem(ProbeKind.HTTP, "https://{ip}:8443/ready") is None
    assert template_problem(ProbeKind.TCP, "{ip}:22") is None


def test_the_stored_policy_form_reads_back_with_defaults() -> None:
    check = HealthCheck.from_json({"http": "http://{ip}/", "successes": 3})
    assert (check.kind, check.successes, check.initial_delay_s, check.deadline_s) == (
        ProbeKind.HTTP,
        3,
        120.0,
        900.0,
    )


def test_a_servers_probe_target_comes_from_its_addresses() -> None:
    from orchestrator.cloud.models import Server

    body = {
        "id": "s-9",
        "name": "db-1",
        "addresses": {
            "vpc-a": [
                {"version": "6", "addr": "fd00::5", "OS-EXT-IPS:type": "fixed"},
                {"version": "4", "addr": "10.0.0.5", "OS-EXT-IPS:type": "fixed"},
                {"version": "4", "addr": "121.36.0.9", "OS-EXT-IPS:type": "floating"},
            ]
        },
    }
    target = Server.from_body(body).probe_target()
    assert (target.ip, target.floating_ip, target.name) == ("10.0.0.5", "121.36.0.9", "db-1")
    assert Server.from_body({"id": "x"}).probe_target().ip is None


def test_the_cli_says_where_a_servers_gate_backup_or_rollback_is() -> None:
    from orchestrator.cli.ops import health_summary

    assert health_summary({"health": None}) == ""
    warming = {"health": {"target": "http://x", "log": {"count": 0}}}
    assert health_summary(warming) == "warming up"
    probed = {
        "phase": "rollback",
        "backup": {"status": "active"},
        "health": {"log": {"count": 3, "streak": 0, "last": {"detail": "HTTP 503"}}},
    }
    assert health_summary(probed) == (
        "rolling back; backup active; 3 probe(s), 0 healthy in a row, last HTTP 503"
    )
