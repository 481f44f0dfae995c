"""Unit tests of the packet trace (plugins/plugin_utils/_trace.py), on tcpdump lines as tcpdump 4.99 prints them."""

import copy

from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _trace as trace

from .troubleshoot_fakes import HEALTHY, config, probe


def test_trace_follows_a_healthy_probe_hop_by_hop():
    result = trace.trace(config(), [probe()], HEALTHY)[0]
    assert result["ok"], result["verdict"]
    assert [h["host"] for h in result["hops"]] == ["client", "proxy", "proxy", "upstream2", "upstream2", "proxy", "proxy", "client"]


def test_trace_names_the_host_where_the_reply_disappeared():
    lost = copy.deepcopy(HEALTHY)
    lost["proxy"] = [line for line in lost["proxy"] if "length 240" not in line]
    lost["client"] = [line for line in lost["client"] if "length 240" not in line]
    result = trace.trace(config(), [probe()], lost)[0]
    assert not result["ok"] and result["culprit"] == "proxy"
    assert "dropped on proxy" in result["verdict"]
    lost["proxy"] = [line for line in lost["proxy"] if "172.16.0.12.80 >" not in line]
    result = trace.trace(config(), [probe()], lost)[0]
    assert result["culprit"] == "upstream2" and "never arrived at proxy" in result["verdict"]


def test_probe_lines_become_probes_and_other_lines_are_skipped():
    service = {"port": "53", "protocol": "udp", "upstream_port": 5353}
    probes = trace.parse_probes(["40000 0 answer with spaces", "40001 1", "x 0 y", "", "12"], "client", "192.168.99.1", service, "dns")
    assert probes == [
        {"host": "client", "client_address": "192.168.99.1", "client_port": 40000, "port": 53, "protocol": "udp", "upstream_port": 5353,
         "kind": "dns", "answered": True, "output": "answer with spaces"},
        {"host": "client", "client_address": "192.168.99.1", "client_port": 40001, "port": 53, "protocol": "udp", "upstream_port": 5353,
         "kind": "dns", "answered": False, "output": ""}]
    assert trace.parse_probes(None, "client", "192.168.99.1", service, "dns") == []


def test_upstream_address_is_the_first_configured_upstream_a_host_holds():
    facts = {"addresses": [{"interface": "eth0", "address": "172.16.0.12"}]}
    assert trace.upstream_address(facts, ["172.16.0.11", "172.16.0.12"]) == "172.16.0.12"
    assert trace.upstream_address(None, ["172.16.0.11"]) == ""


def test_capture_lines_become_events_ports_optional():
    events = trace.parse_capture("proxy", ["garbage",
                                           "1.500000 eth1 Out IP 172.16.0.1 > 172.16.0.11: ICMP echo request, id 1, length 64",
                                           "1.600000 eth0 In IP 192.168.99.1.40000 > 192.168.99.10.53: 12+ A? x. (20)"])
    assert [(e["t"], e["src"], e["sport"], e["dst"], e["dport"], e["proto"], e["payload"]) for e in events] == [
        (1.5, "172.16.0.1", None, "172.16.0.11", None, "icmp", 64), (1.6, "192.168.99.1", 40000, "192.168.99.10", 53, "udp", 0)]
    assert trace.hop_summary(events[1]) == "12+ A? x."


def test_a_mixed_proxy_traces_each_probe_by_its_services_method():
    from .troubleshoot_fakes import dns_capture, dns_probe, mixed_config
    for dns_method, hosts in (("dsr_router_nat", ["client", "proxy", "proxy", "upstream1", "upstream1", "proxy", "proxy", "client"]),
                              ("dsr_origin_nat", ["client", "proxy", "proxy", "upstream1", "upstream1", "client"])):
        cfg = mixed_config(dns_method)
        captures = copy.deepcopy(HEALTHY)
        for host, lines in dns_capture(dns_method).items():
            captures[host] = captures.get(host, []) + lines
        http = dict(probe(), service="http", method="ip_transparency")
        results = trace.trace(cfg, [http, dns_probe(dns_method)], captures)
        assert [r["ok"] for r in results] == [True, True], [r["verdict"] for r in results]
        assert [h["host"] for h in results[0]["hops"]] == ["client", "proxy", "proxy", "upstream2", "upstream2", "proxy", "proxy", "client"]
        assert [h["host"] for h in results[1]["hops"]] == hosts
        if dns_method == "dsr_router_nat":
            assert results[1]["hops"][6]["stage"] == "reply forwarded to the client, source rewritten to the VIP"
            assert results[0]["hops"][6]["stage"] == "reply sent to the client by the proxy"


def test_a_dsr_probe_of_a_mixed_proxy_that_is_not_rewritten_is_named_on_the_proxy():
    from .troubleshoot_fakes import dns_capture, dns_probe, mixed_config
    captures = dns_capture("dsr_router_nat")
    captures["proxy"] = [line for line in captures["proxy"] if "eth0 Out" not in line]
    result = trace.trace(mixed_config("dsr_router_nat"), [dns_probe("dsr_router_nat")], captures)[0]
    assert not result["ok"] and result["culprit"] == "proxy"


def test_probe_lines_carry_the_service_and_its_method_when_known():
    service = {"name": "dns_udp", "method": "dsr_origin_nat", "port": 53, "protocol": "udp", "upstream_port": 53}
    probes = trace.parse_probes(["40000 0 NOERROR"], "client", "192.168.99.1", service, "dns")
    assert (probes[0]["service"], probes[0]["method"]) == ("dns_udp", "dsr_origin_nat")


def test_the_probe_plan_probes_one_service_of_each_method_each_from_its_own_ports():
    from .troubleshoot_fakes import mixed_config
    cfg = mixed_config("dsr_router_nat")
    cfg["services"].insert(1, dict(cfg["services"][1], name="dns_tcp", protocol="tcp", method="ip_transparency"))
    plan = trace.probe_plan(cfg, "", 40000, 2)
    assert [(p["service"]["name"], p["kind"], p["ports"]) for p in plan] == [
        ("http", "http", [40000, 40001]), ("dns_udp", "dns", [40016, 40017])]
    assert [p["service"]["name"] for p in trace.probe_plan(cfg, "dns_tcp", 40000, 1)] == ["dns_tcp"]
    assert trace.probe_plan(cfg, "nothing", 40000, 1) == []


def test_the_probe_plan_of_a_single_method_proxy_is_the_service_probed_before():
    # IP Transparency: the first HTTP service; DSR: the first UDP one
    assert [p["service"]["name"] for p in trace.probe_plan(config(), "", 40000, 4)] == ["http"]
    assert [(p["service"]["name"], p["kind"]) for p in trace.probe_plan(config("dsr_origin_nat"), "", 40000, 4)] == [("dns_udp", "dns")]
    cfg = config()
    cfg["services"] = cfg["services"][1:]
    assert [p["service"]["name"] for p in trace.probe_plan(cfg, "", 40000, 4)] == ["dns_udp"]


def test_ipv6_capture_lines_become_events_with_their_ports():
    events = trace.parse_capture("proxy", [
        "1.700000 eth0 In IP6 2001:db8:99::1.40000 > 2001:db8:99::10.53: 12+ AAAA? x. (20)",
        "1.800000 eth1 Out IP6 2001:db8:99::1.40000 > fd00:16::11.53: 12+ AAAA? x. (20)",
        "1.900000 eth1 Out IP6 fd00:16::1 > fd00:16::11: ICMP6, echo request, id 1, seq 1, length 64",
        "2.000000 eth0 In IP 192.168.99.1.40000 > 192.168.99.10.53: 12+ A? x. (20)"])
    assert [(e["family"], e["src"], e["sport"], e["dst"], e["dport"], e["proto"]) for e in events] == [
        (6, "2001:db8:99::1", 40000, "2001:db8:99::10", 53, "udp"), (6, "2001:db8:99::1", 40000, "fd00:16::11", 53, "udp"),
        (6, "fd00:16::1", None, "fd00:16::11", None, "icmp"), (4, "192.168.99.1", 40000, "192.168.99.10", 53, "udp")]
    assert events[0]["info"] == "12+ AAAA? x. (20)"


def test_upstream_address_prefers_the_hosts_ipv4_upstream_address():
    facts = {"addresses": [{"interface": "eth0", "address": "3.3.3.3"}, {"interface": "eth0", "address": "2001:db8::3"}]}
    assert trace.upstream_address(facts, sorted(["2001:db8::3", "3.3.3.3"])) == "3.3.3.3"
    assert trace.upstream_address(facts, ["2001:db8::3"]) == "2001:db8::3"
