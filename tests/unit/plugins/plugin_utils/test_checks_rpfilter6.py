"""Unit tests of the IPv6 reverse-path filtering check of the troubleshoot diagnosis (issue 16): IPv6 has no rp_filter
sysctl, its filters are firewall rules. The role reads `nft -j list ruleset` and `ip6tables-save` on every host; the
fixtures (tests/unit/fixtures/rpfilter6/troubleshoot/) are that read, in the shape nft 1.0.6 and ip6tables 1.8.9 print
(as ../ruleset.json, made by capture.sh): a strict rule on every interface, firewalld's `fib saddr . mark . iif`, a loose
ip6tables rule, no rule, and a read whose nft failed."""

import os

import pytest

from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _checks as checks

from .troubleshoot_fakes import CLIENT6, UPSTREAMS, UPSTREAMS6, dual_config, dual_lab, lab, config

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "rpfilter6", "troubleshoot")
PINGS = [{"host": "proxy", "target": u, "ok": True, "summary": "1 received"} for u in UPSTREAMS + UPSTREAMS6]


def _read(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def _lab(dns_method, reads):
    hosts = dual_lab(dns_method)
    for name, fixture in reads.items():
        hosts[name]["rpfilter6"] = _read(fixture)
    return hosts


def _rpf(findings, host=None):
    return [(f["host"], f["severity"], f["problem"]) for f in findings if f["check"] == "rp_filter" and "IPv6" in f["problem"]
            and (host is None or f["host"] == host)]


def test_the_read_splits_into_the_nft_json_and_ip6tables_save():
    parsed, unreadable = checks.parse_rpfilter6_read(_read("ip6tables-loose.txt"))
    assert parsed["nft"].startswith('{"nftables"') and parsed["ip6tables"].splitlines()[-2] == "-A PREROUTING -m rpfilter --loose --invert -j DROP"
    assert unreadable == []
    assert checks.parse_rpfilter6_read(_read("unreadable.txt"))[1] == ["nft -j list ruleset failed (exit 1)"]
    assert checks.parse_rpfilter6_read(None) == (None, [])


@pytest.mark.parametrize("dns_method", ["ip_transparency", "dsr_router_nat", "dsr_origin_nat"])
def test_strict_rules_that_the_routes_pass_are_checked_ok_on_every_host(dns_method):
    findings = checks.diagnose(dual_config(dns_method), _lab(dns_method, {h: "strict.txt" for h in ("proxy", "upstream1", "upstream2")}), PINGS)
    assert [f for f in findings if f["severity"] in ("error", "warning")] == []
    assert all(severity == "ok" for _h, severity, _p in _rpf(findings))
    oks = [p for h, _s, p in _rpf(findings, "proxy")]
    assert any(p.startswith("eth0: IPv6 client requests accepted (strict fib saddr . iif oif missing drop; ip -6 route get %s: direct dev eth0)"
                            % CLIENT6) for p in oks), oks
    # the upstreams' replies reach the proxy by router NAT and IP Transparency, not by origin NAT (HTTP is Method 1 always)
    assert len([p for p in oks if p.startswith("eth1: IPv6 replies from upstream fd00:16::")]) == 2
    assert [p for h, _s, p in _rpf(findings, "upstream1")] == [
        "eth0: IPv6 requests from the proxy carrying the client's address accepted (strict fib saddr . iif oif missing drop; "
        "ip -6 route get %s: via %s dev eth0)" % (CLIENT6, "fd00:16::253" if dns_method == "dsr_origin_nat" else "fd00:16::1")]


def test_origin_nat_upstream_whose_route_back_leaves_by_another_interface_is_an_error_with_the_fix():
    hosts = _lab("dsr_origin_nat", {"upstream1": "strict.txt", "upstream2": "ip6tables-loose.txt"})
    for name in ("upstream1", "upstream2"):
        hosts[name]["facts"]["addresses"].append({"interface": "eth1", "address": "2001:db8:7::%s" % name[-1], "prefix": 64,
                                                  "network": "2001:db8:7::/64"})
        hosts[name]["facts"]["route_get"][CLIENT6].update(gateway="2001:db8:7::fe", device="eth1")
    findings = checks.diagnose(dual_config("dsr_origin_nat"), hosts, PINGS)
    # (the origin NAT check now looks for the rewrite on eth1, where the fake has none: not this test's business)
    errors = [f for f in findings if f["severity"] == "error" and f["check"] == "rp_filter"]
    assert [f["host"] for f in errors] == ["upstream1"]
    assert errors[0]["problem"] == ("strict IPv6 reverse-path filtering on eth0 drops IPv6 requests from the proxy carrying the client's "
                                    "address (source %s): the route back leaves by eth1, not eth0" % CLIENT6)
    assert "inet rpf pre: 'fib saddr . iif oif missing drop' (strict)" in errors[0]["evidence"][0]
    assert "make the rule loose" in errors[0]["fix"] and "iifname != \"eth0\"" in errors[0]["fix"]
    # loose filtering (ip6tables --loose) passes: there is a route back
    assert _rpf(findings, "upstream2")[0][1] == "ok" and "loose -A PREROUTING -m rpfilter --loose" in _rpf(findings, "upstream2")[0][2]


def test_router_nat_proxy_whose_route_to_an_upstream_leaves_elsewhere_drops_its_ipv6_replies():
    hosts = _lab("dsr_router_nat", {"proxy": "strict.txt"})
    hosts["proxy"]["facts"]["route_get"][UPSTREAMS6[1]].update(device="eth0", gateway="2001:db8:99::fe")
    errors = [f for f in checks.diagnose(dual_config("dsr_router_nat"), hosts, PINGS) if f["severity"] == "error"]
    assert [(f["host"], f["check"]) for f in errors] == [("proxy", "rp_filter")]
    assert "drops IPv6 replies from upstream fd00:16::12 (source fd00:16::12): the route back leaves by eth0, not eth1" in errors[0]["problem"]


def test_a_loose_rule_drops_what_has_no_route_back():
    hosts = _lab("ip_transparency", {"proxy": "ip6tables-loose.txt"})
    hosts["proxy"]["facts"]["route_get"][CLIENT6] = {"error": "Network is unreachable"}
    errors = [f for f in checks.diagnose(dual_config(), hosts, PINGS) if f["severity"] == "error"]
    assert [f["problem"] for f in errors] == ["IPv6 reverse-path filtering (loose) on eth0 drops IPv6 client requests: no route back to %s" % CLIENT6]


def test_firewalld_mark_lookup_on_a_method_1_proxy_is_a_warning_for_the_marked_replies_only():
    findings = checks.diagnose(dual_config("dsr_router_nat"), _lab("dsr_router_nat", {"proxy": "firewalld.txt"}), PINGS)
    warnings = [f for f in findings if f["severity"] == "warning"]
    assert [(f["host"], f["check"]) for f in warnings] == [("proxy", "rp_filter")] * 2
    assert "looks the source up with the packet's mark" in warnings[0]["problem"] and "fib saddr . iif" in warnings[0]["fix"]
    # the client requests on eth0 are not marked
    assert any(p.startswith("eth0: IPv6 client requests accepted") for _h, _s, p in _rpf(findings, "proxy"))


def test_no_rule_is_ok_and_an_unreadable_ruleset_is_an_info():
    findings = checks.diagnose(dual_config(), _lab("ip_transparency", {"proxy": "none.txt", "upstream1": "unreadable.txt"}), PINGS)
    assert any(p.startswith("eth0: IPv6 client requests accepted (no IPv6 reverse-path filter rule;") for _h, _s, p in _rpf(findings, "proxy"))
    assert _rpf(findings, "upstream1") == [("upstream1", "info", "IPv6 reverse-path filtering not checked: the firewall rules could not be read")]
    assert [f for f in findings if f["severity"] in ("error", "warning")] == []


def test_nothing_changes_without_ipv6_or_without_the_read():
    ipv4 = lab()
    ipv4["proxy"]["rpfilter6"] = _read("strict.txt")
    assert checks.diagnose(config(), ipv4) == checks.diagnose(config(), lab())
    # not read (an older role, an unreachable host): the IPv6 filters are not checked, as before
    assert _rpf(checks.diagnose(dual_config(), dual_lab(), PINGS)) == []
