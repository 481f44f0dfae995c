"""Unit tests of the troubleshoot role's filters (plugins/filter/troubleshoot.py): each hands its arguments to
plugins/plugin_utils/ and returns the answer as is (troubleshoot_method: '' rather than None)."""

from ansible_collections.netops.ip_transparency.plugins.filter import troubleshoot as f

import pytest
from ansible.errors import AnsibleFilterError

from ..plugin_utils.troubleshoot_fakes import HEALTHY, UPSTREAMS, config, lab, mixed_lab, probe, upstream_facts


def test_every_filter_is_exported():
    assert sorted(f.FilterModule().filters()) == [
        "troubleshoot_diagnose", "troubleshoot_first_host", "troubleshoot_method", "troubleshoot_ping_plan",
        "troubleshoot_probe_plan", "troubleshoot_probes", "troubleshoot_report", "troubleshoot_service_methods", "troubleshoot_trace",
        "troubleshoot_upstream_address"]


def test_the_role_pipeline_from_facts_to_report():
    hosts = lab()
    assert f.troubleshoot_method(hosts["proxy"]["facts"]) == "ip_transparency"
    assert f.troubleshoot_method({}) == ""
    plan = f.troubleshoot_ping_plan(config(), hosts)
    assert plan == [{"host": "proxy", "target": u} for u in UPSTREAMS] + [
        {"host": "upstream1", "target": "172.16.0.1"}, {"host": "upstream2", "target": "172.16.0.1"}]
    findings = f.troubleshoot_diagnose(config(), hosts, [dict(p, ok=True, summary="1 received") for p in plan])
    assert [x for x in findings if x["severity"] != "ok"] == []
    traces = f.troubleshoot_trace(config(), [probe()], HEALTHY)
    assert [t["ok"] for t in traces] == [True]
    assert f.troubleshoot_report(config(), findings, traces).endswith("every probe answered")
    assert f.troubleshoot_report(config(), findings).endswith("checks passed")


def test_the_role_helpers():
    assert f.troubleshoot_first_host(["192.168.99.0/24"]) == "192.168.99.1"
    assert f.troubleshoot_upstream_address(upstream_facts(UPSTREAMS[1]), UPSTREAMS) == UPSTREAMS[1]
    probes = f.troubleshoot_probes(["40000 0 ok"], "client", "192.168.99.1", {"port": 80, "protocol": "tcp", "upstream_port": 80}, "http")
    assert [(p["client_port"], p["answered"], p["output"]) for p in probes] == [(40000, True, "ok")]
    plan = f.troubleshoot_probe_plan(config(), "", "40000", "2")
    assert [(p["service"]["name"], p["kind"], p["ports"]) for p in plan] == [("http", "http", [40000, 40001])]


def test_each_services_method_from_the_proxys_nginx_files_and_a_bad_one_refused():
    facts = mixed_lab("dsr_router_nat")["proxy"]["facts"]
    services = [dict(s, method="") for s in config()["services"]]
    assert [(s["name"], s["method"]) for s in f.troubleshoot_service_methods(services, facts, "", "ip_transparency")] == [
        ("http", "ip_transparency"), ("dns_udp", "dsr_router_nat")]
    assert f.troubleshoot_method(facts) == ""
    with pytest.raises(AnsibleFilterError, match="service dns_udp"):
        f.troubleshoot_service_methods([dict(services[1], method="dsr")], None)
