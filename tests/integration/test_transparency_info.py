"""Real-kernel test of transparency_info's rules: a rule routing a service's replies by protocol and source port (as
the upstreams of a proxy mixing DSR origin NAT with another method have) is read with its selectors."""


def test_a_source_port_rule_is_read_with_its_protocol_and_ports(netns, sh, run_module):
    ns = netns()
    sh(ns, "ip rule add priority 1000 ipproto tcp sport 80 lookup 200 && ip rule add priority 1001 ipproto udp sport 5300-5310 lookup 200")
    result = run_module(ns, "transparency_info", {"tables": ["main", 200]})
    assert result["rc"] == 0, result
    rules = dict((r["priority"], r) for r in result["transparency"]["rules"])
    assert (rules[1000]["ipproto"], rules[1000]["sport"], rules[1000]["table"]) == ("tcp", [80, 80], 200)
    assert (rules[1001]["ipproto"], rules[1001]["sport"]) == ("udp", [5300, 5310])
    assert "sport 80" in rules[1000]["line"] and "ipproto tcp" in rules[1000]["line"] and "sport 5300-5310" in rules[1001]["line"]
    assert (rules[32766]["ipproto"], rules[32766]["sport"]) == (None, None)


def test_ipv6_addresses_rules_routes_and_forwarding_are_read(netns, sh, run_module):
    """A dual-stack proxy's IPv6 side: its addresses (after the IPv4 ones), the IP Transparency rule and local route of
    IPv6 (``rules6``, ``routes6``), the kernel's route to an IPv6 upstream and net.ipv6.conf.all.forwarding."""
    ns = netns()
    sh(ns, "sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.lo.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0"
           " && ip link add d0 type veth peer name p0 && ip link set d0 up && ip link set p0 up"
           " && ip addr add 172.16.0.1/24 dev d0 && ip -6 addr add fd00:16::1/64 dev d0 nodad"
           " && ip -6 rule add priority 100 fwmark 1 lookup 100 && ip -6 route add local ::/0 dev lo table 100")
    result = run_module(ns, "transparency_info", {"tables": ["main", 100], "destinations": ["fd00:16::11", "172.16.0.11"]})
    assert result["rc"] == 0, result
    facts = result["transparency"]
    found = [(a["interface"], a["address"], a["network"]) for a in facts["addresses"] if a["interface"] == "d0" and not a["address"].startswith("fe80")]
    assert found == [("d0", "172.16.0.1", "172.16.0.0/24"), ("d0", "fd00:16::1", "fd00:16::/64")]
    rule = [r for r in facts["rules6"] if r["priority"] == 100]
    assert [(r["fwmark"], r["table"], r["action"], r["selectors"]) for r in rule] == [(1, 100, "lookup", False)]
    assert not [r for r in facts["rules"] if r["priority"] == 100]
    local = [(r["type"], r["dest"], r["device"]) for r in facts["routes6"]["100"]]
    assert local == [("local", "::/0", "lo")], facts["routes6"]
    assert facts["routes"]["100"] == []
    assert facts["route_get"]["fd00:16::11"]["device"] == "d0" and facts["route_get"]["172.16.0.11"]["device"] == "d0"
    assert facts["sysctl"]["ipv6_forwarding"] == "0"
