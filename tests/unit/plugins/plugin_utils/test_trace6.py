"""Unit tests of the IPv6 probes and their packet trace (issue 16): the probe plan adds one IPv6 entry per service with
IPv6 upstreams when the IPv6 VIP and client are known, the probes carry their family and VIP, and the trace follows
them through tcpdump's IP6 lines and the upstreams' IPv6 addresses. The captures (tests/unit/fixtures/trace6/) are
tcpdump 4.99 `-i any -nn -tt` lines of one IPv6 probe on every host of the dual-stack lab: HTTP by IP Transparency,
DNS by router NAT and by origin NAT, and a router NAT reply the proxy forwards without rewriting it."""

import copy
import json
import os

import pytest

from ansible_collections.netops.ip_transparency.plugins.filter import troubleshoot as filters
from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _report as report
from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _trace as trace

from .troubleshoot_fakes import CLIENT6, HEALTHY, UPSTREAMS6, VIP6, config, dual_config, dual_lab, probe

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "trace6")


def _capture(name):
    with open(os.path.join(FIXTURES, name + ".json")) as handle:
        return json.load(handle)


def _config(dns_method="ip_transparency"):
    cfg = dual_config(dns_method)
    cfg.update(public_address6=VIP6, upstream_hosts6={"upstream1": UPSTREAMS6[0], "upstream2": UPSTREAMS6[1]})
    return cfg


def _probes(cfg, plan_item, lines):
    return trace.parse_probes(lines, "client", plan_item.get("client_address", cfg["client_address"]), plan_item["service"], plan_item["kind"],
                              plan_item.get("vip", ""))


def test_the_plan_adds_an_ipv6_entry_per_service_after_the_ipv4_ones_from_the_next_ports():
    plan = trace.probe_plan(_config("dsr_router_nat"), "", 40000, 2, 3)
    assert [(p["service"]["name"], p.get("family"), p["ports"]) for p in plan] == [
        ("http", None, [40000, 40001]), ("dns_udp", None, [40016, 40017]),
        ("http", 6, [40032, 40033, 40034]), ("dns_udp", 6, [40048, 40049, 40050])]
    assert (plan[2]["vip"], plan[2]["client_address"]) == (VIP6, CLIENT6)
    # the IPv4 entries are what they were without IPv6
    ipv4 = dict(_config("dsr_router_nat"), public_address6="")
    assert trace.probe_plan(ipv4, "", 40000, 2) == plan[:2]
    assert [p.get("family") for p in trace.probe_plan(_config(), "dns_udp", 40000, 1)] == [None, 6]


def test_no_ipv6_entry_without_an_ipv6_vip_client_or_upstream():
    for change in ({"public_address6": ""}, {"client_address6": ""}):
        assert [p.get("family") for p in trace.probe_plan(dict(_config(), **change), "", 40000, 1)] == [None]
    cfg = _config()
    cfg["services"] = [dict(s, upstreams=["172.16.0.11"]) for s in cfg["services"]]
    assert [p.get("family") for p in trace.probe_plan(cfg, "", 40000, 1)] == [None]


def test_the_filter_finds_the_ipv6_vip_on_the_public_interface_when_none_is_configured():
    cfg = dict(_config(), public_address6="")
    plan = filters.troubleshoot_probe_plan(cfg, "", 40000, 1, 1, hosts=dual_lab())
    assert [(p.get("family"), p.get("vip")) for p in plan] == [(None, None), (6, VIP6)]
    assert [p.get("family") for p in filters.troubleshoot_probe_plan(cfg, "", 40000, 1)] == [None]


def test_ipv6_probes_carry_their_family_and_vip_ipv4_ones_do_not():
    service = {"name": "dns_udp", "port": 53, "protocol": "udp", "upstream_port": 53}
    six = trace.parse_probes(["40048 0 NOERROR"], "client", "2001:DB8:99:0::1", service, "dns", "2001:db8:99:0::10")[0]
    assert (six["family"], six["vip"], six["client_address"]) == (6, VIP6, CLIENT6)
    four = trace.parse_probes(["40000 0 NOERROR"], "client", "192.168.99.1", service, "dns", "")[0]
    assert "family" not in four and "vip" not in four


def test_upstream_address_of_a_family():
    facts = {"addresses": [{"interface": "eth0", "address": "172.16.0.12"}, {"interface": "eth0", "address": "fd00:16::12"}]}
    ups = ["172.16.0.11", "172.16.0.12", "fd00:16::11", "fd00:16:0::12"]
    assert trace.upstream_address(facts, ups) == "172.16.0.12"
    assert trace.upstream_address(facts, ups, 6) == "fd00:16:0::12"
    assert trace.upstream_address({"addresses": [{"interface": "eth0", "address": "172.16.0.12"}]}, ups, 6) == ""


@pytest.mark.parametrize("dns_method, capture, hosts", [
    ("ip_transparency", "http_ip_transparency", ["client", "proxy", "proxy", "upstream2", "upstream2", "proxy", "proxy", "client"]),
    ("dsr_router_nat", "dns_dsr_router_nat", ["client", "proxy", "proxy", "upstream1", "upstream1", "proxy", "proxy", "client"]),
    ("dsr_origin_nat", "dns_dsr_origin_nat", ["client", "proxy", "proxy", "upstream1", "upstream1", "client"]),
])
def test_an_ipv6_probe_is_followed_hop_by_hop_by_its_method(dns_method, capture, hosts):
    cfg = _config(dns_method)
    plan = [p for p in trace.probe_plan(cfg, "", 40000, 1) if p.get("family") == 6]
    item = plan[0] if capture.startswith("http") else plan[-1]
    # the captures' client ports: HTTP's 40032, DNS's 40048 (the plan of a proxy mixing methods)
    result = trace.trace(cfg, _probes(cfg, item, ["%d 0 ok" % (40032 if capture.startswith("http") else 40048)]), _capture(capture))[0]
    assert result["ok"], result["verdict"]
    assert [h["host"] for h in result["hops"]] == hosts
    assert result["verdict"] == "complete: the reply reached the client from %s" % VIP6


def test_an_ipv6_reply_forwarded_without_the_rewrite_is_named_on_the_proxy():
    cfg = _config("dsr_router_nat")
    item = trace.probe_plan(cfg, "", 40000, 1)[-1]
    result = trace.trace(cfg, _probes(cfg, item, ["40048 9"]), _capture("dns_dsr_router_nat_not_rewritten"))[0]
    assert not result["ok"] and result["culprit"] == "proxy"
    assert "proxy forwarded it out of eth0 with source fd00:16::11, not rewritten to %s" % VIP6 in result["verdict"]


def test_ipv4_and_ipv6_probes_in_the_same_captures_are_each_followed_and_reported_with_their_family():
    cfg = _config()
    captures = copy.deepcopy(HEALTHY)
    for host, lines in _capture("http_ip_transparency").items():
        captures[host] = captures.get(host, []) + lines
    plan = trace.probe_plan(cfg, "http", 40000, 1)
    probes = [dict(probe(), service="http", method="ip_transparency")] + _probes(cfg, plan[1], ["40032 0 200"])
    results = trace.trace(cfg, probes, captures)
    assert [r["ok"] for r in results] == [True, True], [r["verdict"] for r in results]
    text = report.report(cfg, [], results)
    assert "Packet trace, probe IPv4 http 192.168.99.10:80 from client (192.168.99.1:40000): answered [service http, method ip_transparency]" in text
    assert ("Packet trace, probe IPv6 http [2001:db8:99::10]:80 from client ([2001:db8:99::1]:40032): answered "
            "[service http, method ip_transparency]") in text
    assert "proxy      eth1   Out [2001:db8:99::1]:51000 > [fd00:16::12]:80 Flags [S] length 0" in text
    assert text.endswith("Summary: healthy - 0 checks passed, every probe answered")


def test_an_ipv4_only_report_says_no_family():
    text = report.report(config(), [], trace.trace(config(), [probe()], HEALTHY))
    assert "Packet trace, probe http 192.168.99.10:80 from client (192.168.99.1:40000): answered" in text and "IPv4" not in text
