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
