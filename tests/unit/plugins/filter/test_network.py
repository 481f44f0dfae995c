"""Unit tests of the roles' address filters (plugins/filter/network.py), on facts shaped like the lab proxy's."""

from ansible_collections.netops.ip_transparency.plugins.filter import network as f

# What `setup` gathers on the lab proxy (trimmed): eth0 client side, eth1 private side, names not stable.
FACTS = {
    "interfaces": ["lo", "eth0", "eth1"],
    "lo": {"device": "lo", "ipv4": {"address": "127.0.0.1", "netmask": "255.0.0.0", "network": "127.0.0.0"}},
    "eth0": {
        "device": "eth0",
        "type": "ether",
        "ipv4": {"address": "192.168.99.10", "netmask": "255.255.255.0", "network": "192.168.99.0", "prefix": "24"},
        "ipv4_secondaries": [{"address": "192.168.99.20", "netmask": "255.255.255.0", "network": "192.168.99.0"}],
        "ipv6": [{"address": "fe80::1", "prefix": "64", "scope": "link"}],
    },
    "eth1": {
        "device": "eth1",
        "type": "ether",
        "ipv4": {"address": "172.16.0.1", "netmask": "255.255.255.0", "network": "172.16.0.0", "prefix": "24"},
    },
    # a fact that is a dict but no interface
    "default_ipv4": {"address": "192.168.99.10", "interface": "eth0"},
}


def test_versions():
    assert f.ip_version("172.16.0.11") == 4
    assert f.ip_version("fd00::1") == 6
    assert f.ip_version("172.16.0.300") == 0
    assert f.ip_version("") == 0
    assert f.network_version("172.16.0.0/24") == 4
    assert f.network_version("172.16.0.1/24") == 4
    assert f.network_version("nonsense") == 0


def test_connected_addresses_skip_loopback_and_keep_secondaries():
    got = f.connected_addresses(FACTS)
    assert [(e["interface"], e["address"], e["network"]) for e in got] == [
        ("eth0", "192.168.99.10", "192.168.99.0/24"),
        ("eth0", "192.168.99.20", "192.168.99.0/24"),
        ("eth0", "fe80::1", "fe80::/64"),
        ("eth1", "172.16.0.1", "172.16.0.0/24"),
    ]
    assert [e["link_local"] for e in got] == [False, False, True, False]


def test_connected_interface_finds_the_subnet_not_the_name():
    assert f.connected_interface("172.16.0.11", FACTS) == "eth1"
    assert f.connected_interface("192.168.99.1", f.connected_addresses(FACTS)) == "eth0"
    assert f.connected_interface("10.9.9.9", FACTS) == ""
    assert f.connected_interface("fe80::2", FACTS) == ""  # link-local subnets are no route to an upstream
    assert f.connected_interface("not an address", FACTS) == ""


def test_in_networks_and_overlaps():
    assert f.in_networks("172.16.0.11", ["192.168.99.0/24", "172.16.0.0/24"])
    assert not f.in_networks("172.16.0.11", "192.168.99.0/24")
    assert not f.in_networks("fd00::1", ["172.16.0.0/24"])
    assert f.overlapping_networks(["172.16.0.0/24"], ["172.16.0.0/16", "192.168.99.0/24"]) == [
        "172.16.0.0/24 overlaps 172.16.0.0/16"]
    assert f.overlapping_networks("172.16.0.0/24", ["192.168.99.0/24", "fd00::/8"]) == []


def test_network_has_host_bits():
    assert f.network_has_host_bits("10.20.30.40/8") is True
    assert f.network_has_host_bits("192.168.99.1/24") is True
    assert f.network_has_host_bits("2001:db8::1/64") is True
    assert f.network_has_host_bits("10.0.0.0/8") is False
    assert f.network_has_host_bits("192.168.99.0/24") is False
    assert f.network_has_host_bits("172.16.0.11") is False
    # not a prefix at all: that is network_version's error, not this one's
    assert f.network_has_host_bits("not-a-network") is False


# IPv6 addresses compare as addresses (issue 16 review, E): one spelling everywhere the roles compare them.
def test_canonical_ip():
    assert f.canonical_ip("fd00:16:0::11") == "fd00:16::11"
    assert f.canonical_ip("FD00:16::0011") == "fd00:16::11"
    assert f.canonical_ip(" 172.16.0.11 ") == "172.16.0.11"
    assert f.canonical_ip(["fd00:16:0::11", "172.16.0.300", "x"]) == ["fd00:16::11", "172.16.0.300", "x"]
    assert f.canonical_ip(5) == 5
    assert f.canonical_ip("fe80::12%eth1") in ("fe80::12%eth1",)


# The one rule for the public IPv6 address (issue 16 review, F): global scope only, numeric order, each once.
FACTS6 = {
    "eth0": {"device": "eth0", "ipv6": [
        {"address": "2001:db8::a", "prefix": "64", "scope": "global"},
        {"address": "fe80::1", "prefix": "64", "scope": "link"},
        {"address": "2001:db8::9", "prefix": "64", "scope": "global"},
        {"address": "2001:db8:0::9", "prefix": "64", "scope": "global"},
        {"address": "fd00:99::1", "prefix": "64", "scope": "host"}]},
    "eth1": {"device": "eth1", "ipv6": [{"address": "fd00:16::1", "prefix": "64", "scope": "global"}]},
}


def test_public_ipv6_candidates_are_global_unique_and_in_numeric_order():
    assert f.public_ipv6(FACTS6, "eth0") == ["2001:db8::9", "2001:db8::a"]
    assert f.public_ipv6(FACTS6, "eth1") == ["fd00:16::1"]
    assert f.public_ipv6(FACTS6, "eth9") == []
    # connected_addresses' entries (no scope, link_local) and troubleshoot's (ip -j addr flags) give the same
    assert f.public_ipv6(f.connected_addresses(FACTS6), "eth0") == ["2001:db8::9", "2001:db8::a", "fd00:99::1"]
    entries = [{"interface": "eth0", "address": "2001:db8::10"}, {"interface": "eth0", "address": "2001:db8::2", "flags": ["temporary"]},
               {"interface": "eth0", "address": "2001:db8::3", "temporary": True}, {"interface": "eth0", "address": "2001:db8::4",
                                                                                    "flags": ["deprecated"]}]
    assert f.public_ipv6(entries, "eth0") == ["2001:db8::10"]


def test_choose_public_ipv6_never_guesses():
    from ansible_collections.netops.ip_transparency.plugins.plugin_utils._addresses import choose_public_ipv6
    entries = [dict(entry, interface=name) for name in ("eth0", "eth1") for entry in FACTS6[name]["ipv6"]]
    assert choose_public_ipv6(entries, "eth1") == ("fd00:16::1", ["fd00:16::1"])
    assert choose_public_ipv6(entries, "eth0") == ("", ["2001:db8::9", "2001:db8::a"])
    assert choose_public_ipv6(entries, "eth0", "2001:DB8:0::a") == ("2001:db8::a", ["2001:db8::9", "2001:db8::a"])


# Enabling IPv6 forwarding deletes the RA default routes of every device with accept_ra != 2 (issue 16 review, A).
def test_ra_routes_lost():
    routes = ("default via fe80::1 dev eth0 proto ra metric 1024 expires 1797sec hoplimit 64 pref medium\n"
              "default proto ra metric 1024 expires 1797sec pref medium\\\tnexthop via fe80::2 dev eth2 weight 1"
              "\\\tnexthop via fe80::3 dev eth3 weight 1\n")
    lost = f.ra_routes_lost(routes, {"eth0": "1", "eth2": "2", "eth3": "0"})
    assert [(r["device"], r["accept_ra"]) for r in lost] == [("eth0", "1"), ("eth3", "0")]
    assert lost[0]["route"].startswith("default via fe80::1 dev eth0")
    assert f.ra_routes_lost("", {"eth0": "1"}) == []
    assert lost[1]["summary"].startswith("interface eth3 (accept_ra 0: default proto ra metric 1024")
    assert f.ra_routes_lost(["default via fe80::1 dev eth0.100 proto ra"], {}) == [
        {"device": "eth0.100", "accept_ra": "?", "route": "default via fe80::1 dev eth0.100 proto ra",
         "summary": "interface eth0.100 (accept_ra ?: default via fe80::1 dev eth0.100 proto ra)",
         "sysctl": "net.ipv6.conf.eth0/100.accept_ra = 2"}]
