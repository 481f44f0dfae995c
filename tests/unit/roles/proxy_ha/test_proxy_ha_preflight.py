"""The proxy_ha preflight's refusals, run on the controller (no lab): every refusal names the offending variable,
host or address and the rule it breaks. One ansible-playbook run for every case: each case is a pair of inventory
hosts (the lab's proxy1 and proxy2 facts unless the case changes them) in a group of its own."""

import copy

import pytest


def facts_without(facts, device):
    return [f for f in copy.deepcopy(facts) if f["device"] != device]


def facts_with(facts, device, fact):
    return facts_without(facts, device) + [fact]


# (case, group variables, this host's variables, the peer's variables, extra hosts, parts of the refusal; None: accepted)
def cases(h):
    return [
        ("good", {}, None, None, None, None),
        ("good-track-services", {"proxy_ha_track_services": [{"protocol": "tcp", "port": 80}, {"protocol": "udp", "port": 53},
                                                             {"protocol": "tcp", "port": 53}]}, None, None, None, None),
        # a re-run: keepalived added both floating addresses to this host, the master
        ("good-vips-on-master", {}, {"fake_interfaces": [h.iface("eth0", "192.168.99.11", "192.168.99.10"),
                                                         h.iface("eth1", "172.16.0.2", "172.16.0.1")]}, None, None, None),
        ("good-explicit-priorities", {}, {"proxy_ha_priority": 90}, {"proxy_ha_priority": 200}, None, None),
        # an extra var on the command line is a string
        ("good-nopreempt-string", {"proxy_ha_nopreempt": "false"}, None, None, None, None),
        ("unknown-state", {"proxy_ha_state": "enabled"}, None, None, None, ["proxy_ha_state", "got enabled"]),
        ("no-public-vip", {"proxy_ha_public_vip": ""}, None, None, None,
         ["proxy_ha_public_vip \"\"", "must be an IPv4 address", "required"]),
        ("ipv6-private-vip", {"proxy_ha_private_vip": "2001:db8::1"}, None, None, None,
         ["proxy_ha_private_vip \"2001:db8::1\"", "must be an IPv4 address"]),
        ("same-vips", {"proxy_ha_private_vip": "192.168.99.10"}, None, None, None,
         ["proxy_ha_public_vip and proxy_ha_private_vip are both 192.168.99.10"]),
        ("vip-not-connected", {"proxy_ha_public_vip": "10.9.9.9"}, None, None, None,
         ["proxy_ha_public_vip 10.9.9.9", "no connected IPv4 subnet", "eth0 192.168.99.0/24"]),
        ("vip-only-address", {}, {"fake_interfaces": facts_with(h.PROXY1, "eth0", h.iface("eth0", "192.168.99.10"))}, None, None,
         ["has no address of its own in 192.168.99.0/24", "proxy_ha_public_vip 192.168.99.10", "only (static) address"]),
        ("peer-same-address", {}, None, {"fake_interfaces": facts_with(h.PROXY2, "eth1", h.iface("eth1", "172.16.0.2"))}, None,
         ["peer-same-address-peer's own address in 172.16.0.0/24 is 172.16.0.2", "the same as peer-same-address's"]),
        ("peer-no-address", {}, None, {"fake_interfaces": facts_without(h.PROXY2, "eth1")}, None,
         ["The peer peer-no-address-peer has no address of its own in 172.16.0.0/24", "proxy_ha_private_vip 172.16.0.1"]),
        ("three-hosts", {}, None, None, {"three-hosts-third": {"fake_interfaces": h.PROXY2}},
         ["proxy_ha_group 'pair_three_hosts' holds 3 hosts", "exactly two hosts"]),
        ("not-in-group", {"proxy_ha_group": "pair_good"}, None, None, None,
         ["proxy_ha_group 'pair_good' does not hold not-in-group", "good, good-peer"]),
        ("unknown-group", {"proxy_ha_group": "proxies"}, None, None, None,
         ["proxy_ha_group 'proxies' is not a group of the inventory"]),
        ("same-vrids", {"proxy_ha_private_vrid": 51}, None, None, None,
         ["proxy_ha_public_vrid and proxy_ha_private_vrid are both 51", "different virtual router ids"]),
        ("vrid-out-of-range", {"proxy_ha_public_vrid": 256}, None, None, None, ["proxy_ha_public_vrid 256", "1..255"]),
        ("priority-out-of-range", {}, {"proxy_ha_priority": 255}, None, None, ["proxy_ha_priority 255", "1..254"]),
        ("equal-priorities", {"proxy_ha_priority": 120}, None, None, None,
         ["proxy_ha_priority is 120 on both equal-priorities and equal-priorities-peer", "must differ"]),
        # the peer's derived priority (second host: 100) equals this host's explicit one
        ("explicit-equals-derived", {}, {"proxy_ha_priority": 100}, None, None,
         ["proxy_ha_priority is 100 on both explicit-equals-derived and explicit-equals-derived-peer"]),
        ("advert-too-long", {"proxy_ha_advert_interval": 50}, None, None, None, ["proxy_ha_advert_interval 50", "0.01..40.95"]),
        ("advert-too-fine", {"proxy_ha_advert_interval": 0.005}, None, None, None, ["proxy_ha_advert_interval 0.005", "hundredths"]),
        ("preempt-delay-too-long", {"proxy_ha_nopreempt": False, "proxy_ha_preempt_delay": 2000}, None, None, None,
         ["proxy_ha_preempt_delay 2000", "0..1000"]),
        ("nopreempt-not-bool", {"proxy_ha_nopreempt": "maybe"}, None, None, None, ["proxy_ha_nopreempt \"maybe\"", "true or false"]),
        ("track-fall-zero", {"proxy_ha_track_fall": 0}, None, None, None, ["proxy_ha_track_fall 0", ">= 1"]),
        ("track-bad-protocol", {"proxy_ha_track_services": [{"protocol": "tcp", "port": 80}, {"protocol": "sctp", "port": 80}]},
         None, None, None, ["proxy_ha_track_services[1]", "protocol \"sctp\" must be one of tcp, udp"]),
        ("track-bad-port", {"proxy_ha_track_services": [{"protocol": "udp", "port": 0}]}, None, None, None,
         ["proxy_ha_track_services[0]", "port 0 must be 1..65535"]),
        ("track-unknown-key", {"proxy_ha_track_services": [{"protocol": "udp", "port": 53, "address": "192.168.99.10"}]},
         None, None, None, ["proxy_ha_track_services[0]", "unknown key address"]),
        ("track-duplicate", {"proxy_ha_track_services": [{"protocol": "tcp", "port": 80}, {"protocol": "udp", "port": 80},
                                                         {"protocol": "tcp", "port": 80}]},
         None, None, None, ["proxy_ha_track_services lists tcp/80 2 times"]),
    ]


# a refusal names only what is wrong: the other variables of a shared check are not in its message
NOT_NAMED = {
    "vrid-out-of-range": ["proxy_ha_private_vrid", "proxy_ha_priority", "proxy_ha_advert_interval"],
    "advert-too-long": ["proxy_ha_public_vrid", "proxy_ha_priority"],
    "ipv6-private-vip": ["proxy_ha_public_vip"],
    "no-public-vip": ["proxy_ha_private_vip"],
    "track-duplicate": ["udp/80 2 times"],
}
CASE_IDS = [c[0] for c in cases(type("H", (), {"iface": staticmethod(lambda *a: {}), "PROXY1": [], "PROXY2": []}))]


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, harness):
    pairs = [harness.pair(case, variables, this, peer, hosts) for case, variables, this, peer, hosts, _parts in cases(harness)]
    failed, _stdout = harness.run_pairs(tmp_path_factory.mktemp("preflight"), pairs)
    return failed


@pytest.mark.parametrize("case", CASE_IDS)
def test_refusal_names_the_item_and_the_rule(refusals, assert_refusal, harness, case):
    parts = dict((c[0], c[5]) for c in cases(harness))[case]
    assert_refusal(refusals, case, parts, NOT_NAMED.get(case, []))


def test_the_peers_of_good_pairs_are_accepted_too(refusals):
    for case in ("good", "good-track-services", "good-vips-on-master", "good-explicit-priorities"):
        assert case + "-peer" not in refusals, refusals[case + "-peer"]
