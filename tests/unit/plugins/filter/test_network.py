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
