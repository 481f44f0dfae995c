"""Unit tests of the tc ``nat`` action codec (_nat/act_nat_codec) and of the tc messages built with it.

The reference is iproute2 itself: tests/unit/fixtures/tc_nat/tc_requests.json holds the netlink requests
``tc`` sent for the commands listed there (captured with strace by capture.py in the same directory; the
kernel refusing a nat action does not change what tc sent). Every message the collection builds for the
same command must be byte for byte the same, sequence number and port id aside.
"""

import ipaddress
import json
import os
import struct

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import act_nat_codec as tc_nat_action
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import tc_backend as tcb

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "tc_nat", "tc_requests.json")

with open(FIXTURE) as _handle:
    CAPTURE = json.load(_handle)


def request(fragment):
    """The captured request whose command contains ``fragment`` (exactly one)."""
    found = [r for r in CAPTURE["requests"] if fragment in r["command"]]
    assert len(found) == 1, fragment
    return found[0]


def raw(fragment):
    return bytes.fromhex(request(fragment)["hex"])


def ifindex(data):
    return struct.unpack_from("=i", data, 20)[0]


def nat_parms_of(data):
    """Walk a captured filter request down to its TCA_NAT_PARMS payload."""
    options = dict(tcb.parse_attrs(data[36:]))[2]
    act = dict(tcb.parse_attrs(options))[7]
    prio1 = dict(tcb.parse_attrs(act))[1]
    act_options = dict(tcb.parse_attrs(prio1))[2]
    return dict(tcb.parse_attrs(act_options))[tc_nat_action.TCA_NAT_PARMS]


def same_request(ours, theirs):
    """Equal but for nlmsg_seq and nlmsg_pid (bytes 8-15)."""
    assert len(ours) == len(theirs)
    assert ours[:8].hex() == theirs[:8].hex()
    assert ours[16:].hex() == theirs[16:].hex()


# --- the struct tc_nat codec ---------------------------------------------------------------------

NAT_CASES = [
    # (fragment of the captured command, encode_parms arguments)
    ("nat egress 172.16.0.11 192.168.99.10", ("172.16.0.11", "192.168.99.10", "egress", "ok")),
    ("nat egress 172.16.0.11/32 192.168.99.10 continue", ("172.16.0.11/32", "192.168.99.10", "egress", "continue")),
    ("nat egress 10.9.8.255/32 203.0.113.7 continue", ("10.9.8.255/32", "203.0.113.7", "egress", "continue")),
    ("nat ingress 192.168.99.0/24 10.1.2.0 pipe", ("192.168.99.0/24", "10.1.2.0", "ingress", "pipe")),
]


@pytest.mark.parametrize("fragment, args", NAT_CASES)
def test_parms_bytes_are_what_tc_sends(fragment, args):
    assert tc_nat_action.encode_parms(*args).hex() == nat_parms_of(raw(fragment)).hex()


@pytest.mark.parametrize("fragment, args", NAT_CASES)
def test_decoding_what_tc_sends(fragment, args):
    parms = tc_nat_action.decode_parms(nat_parms_of(raw(fragment)))
    old, new, direction, control = args
    assert parms["old"] == ipaddress.ip_network(old)
    assert parms["new"] == ipaddress.ip_address(new)
    assert parms["direction"] == direction
    assert parms["control"] == {"ok": "pass"}.get(control, control)


@pytest.mark.parametrize("old, new, direction, control", [
    ("172.16.0.11/32", "192.168.99.10", "egress", "continue"),
    ("0.0.0.0/0", "1.2.3.4", "ingress", "ok"),
    ("10.0.0.0/8", "192.168.0.0", "egress", "pipe"),
    ("255.255.255.255", "0.0.0.0", "ingress", "drop"),
    ("192.0.2.128/25", "198.51.100.0", "egress", "reclassify"),
])
def test_round_trip(old, new, direction, control):
    data = tc_nat_action.encode_parms(old, new, direction, control)
    assert len(data) == tc_nat_action.PARMS_SIZE == 36
    parms = tc_nat_action.decode_parms(data)
    assert (parms["old"], parms["new"], parms["direction"], parms["control"]) == (
        ipaddress.ip_network(old), ipaddress.ip_address(new), direction, {"ok": "pass"}.get(control, control))
    again = tc_nat_action.encode_parms(parms["old"], parms["new"], parms["direction"], parms["control"])
    assert again == data


def test_decode_keeps_the_kernels_counters_and_index():
    data = struct.pack(tc_nat_action.PARMS_FORMAT, 7, 0, -1, 2, 1, bytes([172, 16, 0, 11]), bytes([192, 168, 99, 10]), b"\xff" * 4, 1)
    parms = tc_nat_action.decode_parms(data + b"\0" * 4)  # longer structs from newer kernels: the tail is ignored
    assert (parms["index"], parms["refcnt"], parms["bindcnt"], parms["control"]) == (7, 2, 1, "continue")


@pytest.mark.parametrize("args, message", [
    (("2001:db8::1", "192.168.99.10"), "IPv4-only"),
    (("172.16.0.11", "2001:db8::1"), "IPv4-only"),
    (("172.16.0.11", "192.168.99.10", "sideways"), "direction"),
    (("172.16.0.11", "192.168.99.10", "egress", "jump"), "control action"),
])
def test_encode_refuses(args, message):
    with pytest.raises(ValueError, match=message):
        tc_nat_action.encode_parms(*args)


def test_decode_refuses_short_data():
    with pytest.raises(ValueError, match="36 bytes"):
        tc_nat_action.decode_parms(b"\0" * 35)


# --- whole requests built by the tc backend vs tc's ----------------------------------------------------

def test_htb_qdisc_request():
    theirs = raw("tc qdisc add dev v0 root handle d5: htb default d5d5")
    ours = tcb.encode(tcb.htb_qdisc_message(ifindex(theirs)), tcb.RTM_NEWQDISC, tcb.FLAGS_CREATE)
    same_request(ours, theirs)


def test_hash_table_request():
    theirs = raw("u32 divisor 256")
    ours = tcb.encode(tcb.divisor_message(ifindex(theirs), tcb.OWN_QDISC), tcb.RTM_NEWTFILTER, tcb.FLAGS_CREATE)
    same_request(ours, theirs)


def test_link_request():
    theirs = raw("u32 link d5: hashkey mask 0x000000ff at 12 match u32 0 0")
    ours = tcb.encode(tcb.link_message(ifindex(theirs), tcb.OWN_QDISC), tcb.RTM_NEWTFILTER, tcb.FLAGS_CREATE)
    same_request(ours, theirs)


@pytest.mark.parametrize("fragment, src, protocol, sport, nat_to", [
    ("u32 ht d5:b: match ip src 172.16.0.11/32", "172.16.0.11", "udp", 53, "192.168.99.10"),
    ("u32 ht d5:ff: match ip src 10.9.8.255/32", "10.9.8.255", "tcp", 8443, "203.0.113.7"),
])
def test_leaf_request(fragment, src, protocol, sport, nat_to):
    theirs = raw(fragment)
    ours = tcb.encode(tcb.leaf_message(ifindex(theirs), tcb.OWN_QDISC, src, protocol, sport, nat_to), tcb.RTM_NEWTFILTER, tcb.FLAGS_CREATE)
    same_request(ours, theirs)
    # and the module renders the very command that was captured
    rendered = "tc filter add dev v0 " + tcb.render_leaf(tcb.OWN_QDISC, ipaddress.ip_address(src), protocol, sport, nat_to)[len("filter "):]
    assert rendered == request(fragment)["command"]


def test_the_articles_filter_request():
    theirs = raw("prio 10 u32 match ip src 172.16.0.11/32 match ip sport 53 0xffff action nat egress 172.16.0.11 192.168.99.10")
    keys = [(0xFFFFFFFF, int(ipaddress.ip_address("172.16.0.11")), 12), (0xFFFF0000, 53 << 16, 20)]
    msg = tcb.nat_filter_message(ifindex(theirs), tcb.OWN_QDISC, 10, keys, "172.16.0.11", "192.168.99.10")
    same_request(tcb.encode(msg, tcb.RTM_NEWTFILTER, tcb.FLAGS_CREATE), theirs)


def test_ingress_prefix_filter_request():
    theirs = raw("nat ingress 192.168.99.0/24 10.1.2.0 pipe")
    keys = [(0xFFFFFF00, int(ipaddress.ip_address("192.168.99.0")), 16)]
    msg = tcb.nat_filter_message(ifindex(theirs), tcb.OWN_QDISC, 10, keys, "192.168.99.0/24", "10.1.2.0", "ingress", "pipe")
    same_request(tcb.encode(msg, tcb.RTM_NEWTFILTER, tcb.FLAGS_CREATE), theirs)


def test_decode_message_reads_back_a_leaf():
    theirs = raw("u32 ht d5:b: match ip src 172.16.0.11/32")
    entry = tcb.decode_message(theirs)
    assert (entry["kind"], entry["prio"], entry["protocol"], entry["parent"]) == ("u32", 1, tcb.ETH_P_IP, tcb.OWN_QDISC)
    assert entry["u32"]["hash"] == 0x0D50B000
    assert entry["u32"]["sel"]["flags"] == tcb.TC_U32_TERMINAL
    leaf = tcb.leaf_from_filter(entry)
    assert leaf == tcb.Leaf(ipaddress.ip_address("172.16.0.11"), "udp", 53, ipaddress.ip_address("192.168.99.10"), "continue", 0)


def test_decode_message_reads_back_the_link_and_the_qdisc():
    link = tcb.decode_message(raw("u32 link d5:"))["u32"]
    assert link["link"] == tcb.OWN_HTID
    assert (link["sel"]["hmask"], link["sel"]["hoff"], link["sel"]["flags"]) == (0xFF, 12, 0)
    assert link["sel"]["keys"] == [(0, 0, 0, 0)]
    qdisc = tcb.decode_message(raw("htb default d5d5"))
    assert (qdisc["kind"], qdisc["handle"], qdisc["htb_default"]) == ("htb", tcb.OWN_QDISC, tcb.OWN_HTB_DEFAULT)


def test_the_articles_filter_is_not_mistaken_for_the_modules():
    """Same action, but no hash table and no protocol key: not one of the module's filters."""
    entry = tcb.decode_message(raw("prio 10 u32 match ip src 172.16.0.11/32 match ip sport 53 0xffff"))
    assert tcb.leaf_from_filter(entry) is None


def test_fixture_records_how_it_was_made():
    assert CAPTURE["tc_version"].startswith("tc utility, iproute2-")
    for item in CAPTURE["requests"]:
        assert item["command"].startswith("tc ")
        data = bytes.fromhex(item["hex"])
        assert struct.unpack_from("=I", data, 0)[0] == len(data)


# --- the pass filters of exclude_destinations, against tc_requests_exclude.json (capture_exclude.py) ------------

with open(os.path.join(os.path.dirname(FIXTURE), "tc_requests_exclude.json")) as _handle:
    CAPTURE_EXCLUDE = json.load(_handle)


def raw_exclude(fragment):
    found = [r for r in CAPTURE_EXCLUDE["requests"] if fragment in r["command"]]
    assert len(found) == 1, fragment
    return bytes.fromhex(found[0]["hex"]), found[0]["command"]


@pytest.mark.parametrize("fragment, dst, node", [
    ("handle ::1 u32 match ip dst 172.16.0.1/32 action gact pass", "172.16.0.1/32", 1),
    ("handle ::2 u32 match ip dst 198.51.100.0/24 action gact pass", "198.51.100.0/24", 2),
])
def test_pass_request(fragment, dst, node):
    theirs, command = raw_exclude(fragment)
    ours = tcb.encode(tcb.pass_message(ifindex(theirs), tcb.OWN_QDISC, ipaddress.ip_network(dst), node), tcb.RTM_NEWTFILTER, tcb.FLAGS_CREATE)
    same_request(ours, theirs)
    assert "tc " + tcb.add_command("v0", tcb.render_pass(tcb.OWN_QDISC, ipaddress.ip_network(dst), node)) == command
    # read back as a dump shows it (the kernel adds the hash of the root table it put it in)
    entry = tcb.decode_message(theirs)
    entry["handle"], entry["u32"]["hash"] = 0x80000000 | node, 0x80000000
    assert tcb.pass_from_filter(entry) == tcb.Pass(ipaddress.ip_network(dst), 0x80000000 | node)


def test_the_exclude_capture_used_the_modules_qdisc_and_prio():
    commands = [r["command"] for r in CAPTURE_EXCLUDE["requests"]]
    assert commands[:3] == [r["command"] for r in CAPTURE["requests"][:3]]
    assert [bytes.fromhex(r["hex"])[16:] for r in CAPTURE_EXCLUDE["requests"][:3]] == [bytes.fromhex(r["hex"])[16:] for r in CAPTURE["requests"][:3]]
