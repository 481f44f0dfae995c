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
