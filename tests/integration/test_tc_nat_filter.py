"""Real-kernel tests of tc_nat_filter: the nftables backend, backend choice and input errors.

Two throwaway namespaces joined by a veth pair: ``up`` holds the upstreams (172.16.0.x and
2001:db8:16::x on lo, the link 10.0.0.1/24 and fd00:5::1/64 on ``up0``), ``cl`` the client side
(``cl0``: 10.0.0.2/24, fd00:5::2/64). The module runs in ``up`` on ``up0``; UDP datagrams are sent
from an upstream address and port to the client, whose UDP socket reports the source it sees.
Raw-socket datagrams carry a software checksum (no offload), so a receiver that gets them proves
the rewrite fixed the UDP checksum; a control datagram with a wrong checksum shows that the
receiver does drop bad ones.

The tc backend's own namespace tests are in test_tc_nat_filter_tc.py (they need act_nat).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils._nat.kernel import act_nat_support

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, ".collections")
ACT_NAT, ACT_NAT_HOW = act_nat_support()

VIP = "192.168.99.10"
VIP6 = "2001:db8:99::10"

RECEIVER = textwrap.dedent("""
    import socket, sys
    family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
    s.settimeout(float(sys.argv[3]))
    print("ready", flush=True)
    try:
        while True:
            data, addr = s.recvfrom(2048)
            if data == b"end":  # sent last, from the link address: everything before it has arrived or is lost
                break
            print("%s %s %s" % (data.decode(), addr[0], addr[1]), flush=True)
    except socket.timeout:
        print("timeout", flush=True)
""")

SENDER = textwrap.dedent("""
    import socket, struct, sys

    def csum(data):
        if len(data) % 2:
            data += b"\\0"
        total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    for item in sys.argv[1:]:
        mode, src, sport, dst, dport, tag = item.split(",")
        sport, dport, payload = int(sport), int(dport), tag.encode()
        family = socket.AF_INET6 if ":" in src else socket.AF_INET
        if mode == "sock":
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((src, sport))
            s.sendto(payload, (dst, dport))
        else:  # raw: a UDP header with a checksum computed here, in software
            length = 8 + len(payload)
            if family == socket.AF_INET:
                pseudo = socket.inet_pton(family, src) + socket.inet_pton(family, dst) + struct.pack("!BBH", 0, 17, length)
            else:
                pseudo = socket.inet_pton(family, src) + socket.inet_pton(family, dst) + struct.pack("!I3xB", length, 17)
            check = csum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload) or 0xFFFF
            if mode == "rawbad":
                check ^= 0x5A5A
            s = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_UDP)
            s.bind((src, 0))
            s.sendto(struct.pack("!HHHH", sport, dport, length, check) + payload, (dst, 0))
        s.close()
""")


def ns_python(ns, code, *args, **kwargs):
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", code] + [str(a) for a in args]
    timeout = kwargs.pop("timeout", None)
    assert not kwargs, "unexpected arguments: %s" % kwargs
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=COLLECTIONS), timeout=timeout, check=False)


class Pair(object):
    """The two namespaces of a test and the means to send datagrams across."""

    def __init__(self, netns, sh):
        self.up = netns()
        self.cl = netns()
        self.sh = sh
        sh(self.up, "ip link add up0 type veth peer name cl0 && ip link set cl0 netns %s" % self.cl)
        sh(self.up, "ip addr add 10.0.0.1/24 dev up0 && ip -6 addr add fd00:5::1/64 dev up0 nodad && ip link set up0 up")
        for address in ("172.16.0.11", "172.16.0.12", "172.16.1.11"):
            sh(self.up, "ip addr add %s/32 dev lo" % address)
        sh(self.up, "ip -6 addr add 2001:db8:16::11/128 dev lo")
        sh(self.cl, "ip addr add 10.0.0.2/24 dev cl0 && ip -6 addr add fd00:5::2/64 dev cl0 nodad && ip link set cl0 up")
        # replies to the rewritten sources are not needed; accept them whatever rp_filter says
        sh(self.cl, "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.cl0.rp_filter=0")

    def exchange(self, datagrams, version=4, port=5353, timeout=60):
        """Send (mode, src, sport, tag[, dst]) datagrams from ``up`` to the client; returns {tag: "src sport"} as received.

        ``dst`` defaults to the client's link address (10.0.0.2 or fd00:5::2); another one must be an address of
        the client's namespace (see add_probe_addresses). An ``end`` datagram from the link address closes the
        exchange (``timeout`` is only a safety net).
        """
        dst = "10.0.0.2" if version == 4 else "fd00:5::2"
        datagrams = list(datagrams) + [("sock", "10.0.0.1" if version == 4 else "fd00:5::1", 9, "end")]
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", self.cl, sys.executable, "-c", RECEIVER, str(version), str(port), str(timeout)],
            stdout=subprocess.PIPE, text=True)
        try:
            assert receiver.stdout.readline().strip() == "ready"
            items = ["%s,%s,%d,%s,%d,%s" % (mode, src, sport, (other or [dst])[0], port, tag) for mode, src, sport, tag, *other in datagrams]
            sent = ns_python(self.up, SENDER, *items)
            assert sent.returncode == 0, sent.stderr
            out = receiver.communicate(timeout=timeout + 30)[0]
        finally:
            if receiver.poll() is None:
                receiver.kill()
        seen = {}
        assert "timeout" not in out, "the end datagram never came: %s" % out
        for line in out.splitlines():
            tag, src, sport = line.split()
            seen[tag] = "%s %s" % (src, sport)
        return seen


@pytest.fixture
def pair(netns, sh):
    return Pair(netns, sh)


def nft_tables(sh, ns):
    return sh(ns, "nft list tables netdev", check=False).split()


RULES = [
    {"src": "172.16.0.8/30", "protocol": "udp", "sport": 53, "nat_to": VIP},
    {"src": "172.16.0.12/30", "protocol": "udp", "sport": 53, "nat_to": VIP},
    {"src": "172.16.1.11", "protocol": "udp", "sport": 53, "nat_to": "192.168.99.20"},
    {"src": "2001:db8:16::/64", "sport": 53, "nat_to": VIP6},
]

DATAGRAMS = [
    ("sock", "172.16.0.11", 53, "a"),  # in the collapsed /29
    ("raw", "172.16.0.12", 53, "b"),  # software checksum
    ("raw", "172.16.1.11", 53, "c"),  # its own target
    ("sock", "172.16.0.11", 54, "d"),  # another port: untouched
    ("rawbad", "172.16.0.11", 53, "e"),  # a wrong checksum stays wrong: dropped
]


def test_nftables_rewrites_sources_idempotently_and_absent_restores(pair, run_module, sh):
    before = pair.exchange(DATAGRAMS)
    assert before == {"a": "172.16.0.11 53", "b": "172.16.0.12 53", "c": "172.16.1.11 53", "d": "172.16.0.11 54"}

    args = {"device": "up0", "backend": "nftables", "rules": RULES}
    checked = run_module(pair.up, "tc_nat_filter", args, check=True)
    assert checked["changed"] is True and checked["rc"] == 0, checked
    assert nft_tables(sh, pair.up) == [], "check mode must not create anything"
    assert pair.exchange(DATAGRAMS[:1]) == {"a": "172.16.0.11 53"}

    first = run_module(pair.up, "tc_nat_filter", args)
    assert first["changed"] is True and first["backend"] == "nftables", first
    assert first["diff"] == checked["diff"]
    # 172.16.0.8/30 + 172.16.0.12/30 collapse into one element
    assert {"src": "172.16.0.8/29", "protocol": "udp", "sport": 53, "nat_to": VIP} in first["rules"]
    assert len(first["rules"]) == 3
    assert "element netdev netops_nat_up0 snat4 { 172.16.0.8/29 . udp . 53 : 192.168.99.10 }" in first["diff"]["after"]

    after = pair.exchange(DATAGRAMS)
    assert after == {"a": "%s 53" % VIP, "b": "%s 53" % VIP, "c": "192.168.99.20 53", "d": "172.16.0.11 54"}
    # a raw datagram (software checksum) and one a socket sent (checksum offloaded: see the test below)
    assert pair.exchange([("raw", "2001:db8:16::11", 53, "v6"), ("sock", "2001:db8:16::11", 53, "v6s")], version=6) == {
        "v6": "%s 53" % VIP6, "v6s": "%s 53" % VIP6}

    again = run_module(pair.up, "tc_nat_filter", args)
    assert again["changed"] is False, again
    assert again["diff"]["before"] == again["diff"]["after"] == first["diff"]["after"]
    assert again["added"] == again["removed"] == []

    # the same rules spelled otherwise are the same rules
    spelled = run_module(pair.up, "tc_nat_filter", dict(args, rules=[
        {"src": "172.16.0.8/29", "sport": "53", "nat_to": VIP},
        {"src": "172.16.1.11/32", "sport": 53, "nat_to": "192.168.99.20"},
        {"src": "2001:db8:16:0::/64", "sport": 53, "nat_to": "2001:db8:99:0::10"},
    ]))
    assert spelled["changed"] is False, spelled

    gone = run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "nftables", "state": "absent"})
    assert gone["changed"] is True and len(gone["removed"]) == 3, gone
    assert nft_tables(sh, pair.up) == []
    assert pair.exchange(DATAGRAMS) == before
    assert run_module(pair.up, "tc_nat_filter", {"device": "up0", "state": "absent"})["changed"] is False


# Reads one IPv6/UDP datagram (payload argv[2]) on a device (argv[1]) with an AF_PACKET socket and the kernel's
# auxiliary data: whether its checksum is still to be completed (TP_STATUS_CSUMNOTREADY, CHECKSUM_PARTIAL: the
# sender's stack left the UDP checksum field holding the pseudo-header sum, for the device to finish), and whether
# that seed, or else the full checksum, matches the addresses the datagram carries now.
SNIFFER6 = textwrap.dedent("""
    import json, socket, struct, sys
    ETH_P_IPV6, SOL_PACKET, PACKET_AUXDATA, TP_STATUS_CSUMNOTREADY = 0x86DD, 263, 8, 8

    def add(data):
        if len(data) % 2:
            data += b"\\0"
        return sum(struct.unpack("!%dH" % (len(data) // 2), data))

    def fold(total):
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return total

    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6))
    s.bind((sys.argv[1], ETH_P_IPV6))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.settimeout(float(sys.argv[3]))
    print("ready", flush=True)
    try:
        while True:
            data, ancillary, _flags, _addr = s.recvmsg(4096, socket.CMSG_SPACE(20))
            if len(data) < 48 or data[6] != 17:  # UDP right after the IPv6 header
                continue
            udp = data[40:]
            sport, _dport, length, check = struct.unpack("!HHHH", udp[:8])
            if udp[8:length] != sys.argv[2].encode():
                continue
            status = [struct.unpack("I", item[2][:4])[0] for item in ancillary if item[:2] == (SOL_PACKET, PACKET_AUXDATA)]
            pseudo = add(data[8:40] + struct.pack("!I3xB", length, 17))
            print(json.dumps({"src": socket.inet_ntop(socket.AF_INET6, data[8:24]), "sport": sport,
                              "partial": bool(status and status[0] & TP_STATUS_CSUMNOTREADY),
                              "seed_ok": fold(pseudo) % 0xFFFF == check % 0xFFFF,
                              "full_ok": fold(pseudo + add(udp[:length])) == 0xFFFF}), flush=True)
            break
    except socket.timeout:
        print("timeout", flush=True)
""")


def _sniff6(pair, tag, timeout=30):
    sniffer = subprocess.Popen(["ip", "netns", "exec", pair.cl, sys.executable, "-c", SNIFFER6, "cl0", tag, str(timeout)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert sniffer.stdout.readline().strip() == "ready"
        sent = ns_python(pair.up, SENDER, "sock,2001:db8:16::11,53,fd00:5::2,5353,%s" % tag)
        assert sent.returncode == 0, sent.stderr
        out = sniffer.communicate(timeout=timeout + 30)[0].strip()
    finally:
        if sniffer.poll() is None:
            sniffer.kill()
    assert out != "timeout", "the datagram never came"
    return json.loads(out)


def test_nftables_fixes_the_offloaded_checksum_of_a_socket_sent_ipv6_datagram(pair, run_module):
    """F3 of issue 16: `ip6 saddr set` on a datagram whose UDP checksum the device is to finish (CHECKSUM_PARTIAL, as a
    socket sends it through a veth with tx checksumming) updates the pseudo-header seed, not only a full checksum."""
    before = _sniff6(pair, "seed0")
    assert before == {"src": "2001:db8:16::11", "sport": 53, "partial": True, "seed_ok": True, "full_ok": False}, before

    run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "nftables", "rules": RULES[3:]})
    after = _sniff6(pair, "seed1")
    # a seed left for the old source would fail seed_ok: it is the sum of the addresses the datagram carries now
    assert after == {"src": VIP6, "sport": 53, "partial": True, "seed_ok": True, "full_ok": False}, after


def test_nftables_update_and_partial_absent(pair, run_module, sh):
    args = {"device": "up0", "backend": "nftables", "rules": RULES[:2]}
    run_module(pair.up, "tc_nat_filter", args)
    changed = run_module(pair.up, "tc_nat_filter", dict(args, rules=[{"src": "172.16.0.11", "sport": 53, "nat_to": "192.168.99.30"}]))
    assert changed["changed"] is True
    assert changed["removed"] == [{"src": "172.16.0.8/29", "protocol": "udp", "sport": 53, "nat_to": VIP}]
    assert changed["added"] == [{"src": "172.16.0.11/32", "protocol": "udp", "sport": 53, "nat_to": "192.168.99.30"}]
    assert pair.exchange([("sock", "172.16.0.11", 53, "a"), ("sock", "172.16.0.12", 53, "b")]) == {
        "a": "192.168.99.30 53", "b": "172.16.0.12 53"}

    # absent with rules removes those (address-wise), keeps the rest
    run_module(pair.up, "tc_nat_filter", dict(args, rules=RULES[:2]))
    part = run_module(pair.up, "tc_nat_filter", dict(args, state="absent", rules=[{"src": "172.16.0.12", "sport": 53, "nat_to": VIP}]))
    assert part["changed"] is True
    assert [r["src"] for r in part["rules"]] == ["172.16.0.8/30", "172.16.0.13/32", "172.16.0.14/31"]
    assert pair.exchange([("sock", "172.16.0.11", 53, "a"), ("sock", "172.16.0.12", 53, "b")]) == {
        "a": "%s 53" % VIP, "b": "172.16.0.12 53"}


def test_foreign_table_of_the_same_name_is_never_replaced(pair, run_module, sh):
    sh(pair.up, "nft add table netdev netops_nat_up0 && nft add chain netdev netops_nat_up0 mine")
    result = run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "nftables", "rules": RULES[:1]})
    assert result["failed"] and "not created by tc_nat_filter" in result["msg"], result
    assert run_module(pair.up, "tc_nat_filter", {"device": "up0", "state": "absent"})["changed"] is False
    assert "chain mine" in sh(pair.up, "nft list table netdev netops_nat_up0")


def test_tables_per_device_coexist(pair, run_module, sh):
    sh(pair.up, "ip link add dev.7 type veth peer name dev7p && ip link set dev.7 up")
    run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "nftables", "rules": RULES[:1]})
    other = run_module(pair.up, "tc_nat_filter", {"device": "dev.7", "backend": "nftables", "rules": RULES[2:3]})
    assert other["changed"] is True, other
    assert sorted(nft_tables(sh, pair.up)) == ["netdev", "netdev", "netops_nat_dev_2e7", "netops_nat_up0", "table", "table"]
    assert run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "nftables", "rules": RULES[:1]})["changed"] is False
    run_module(pair.up, "tc_nat_filter", {"device": "dev.7", "state": "absent"})
    assert "netops_nat_up0" in nft_tables(sh, pair.up)


@pytest.mark.parametrize("rules, device, message", [
    ([{"src": "not-an-address", "sport": 53, "nat_to": VIP}], "up0", "not an IPv4 or IPv6 address or prefix"),
    ([{"src": "172.16.0.1/24", "sport": 53, "nat_to": VIP}], "up0", "host bits set"),
    ([{"src": "172.16.0.11", "sport": 53, "nat_to": "172.16.0.0/24"}], "up0", "not an IPv4 or IPv6 address"),
    ([{"src": "172.16.0.11", "sport": 70000, "nat_to": VIP}], "up0", "out of range 1-65535"),
    ([{"src": "172.16.0.11", "sport": 0, "nat_to": VIP}], "up0", "out of range 1-65535"),
    ([{"src": "172.16.0.11", "sport": 53, "nat_to": VIP6}], "up0", "mix IPv4 and IPv6"),
    ([{"src": "172.16.0.11", "sport": 53, "nat_to": VIP}, {"src": "172.16.0.8/29", "sport": 53, "nat_to": "10.1.1.1"}], "up0", "rules conflict"),
    ([{"src": "172.16.0.11", "sport": 53, "nat_to": VIP}], "nosuchdev0", "unknown interface 'nosuchdev0'"),
])
@pytest.mark.parametrize("backend", ["auto", "nftables", "tc"])
def test_bad_input_fails_before_any_change(pair, run_module, sh, rules, device, message, backend):
    result = run_module(pair.up, "tc_nat_filter", {"device": device, "backend": backend, "rules": rules})
    assert result.get("failed") and message in result["msg"], result
    assert nft_tables(sh, pair.up) == []
    assert "noqueue" in sh(pair.up, "tc qdisc show dev up0")


def test_ipv6_rule_with_the_tc_backend_is_refused(pair, run_module, sh):
    result = run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "tc", "rules": RULES[3:]})
    assert result.get("failed") and "IPv4-only" in result["msg"] and "nftables" in result["msg"], result
    assert "noqueue" in sh(pair.up, "tc qdisc show dev up0")


def test_auto_uses_tc_only_where_the_kernel_has_act_nat(pair, run_module):
    result = run_module(pair.up, "tc_nat_filter", {"device": "up0", "rules": RULES[:1]}, check=True)
    assert result["backend"] == ("tc" if ACT_NAT else "nftables"), result
    assert ACT_NAT_HOW in result["backend_reason"]
    # an IPv6 rule takes auto to nftables whatever the kernel
    assert run_module(pair.up, "tc_nat_filter", {"device": "up0", "rules": RULES}, check=True)["backend"] == "nftables"


@pytest.mark.skipif(ACT_NAT, reason="this kernel has act_nat (%s): tc works here" % ACT_NAT_HOW)
def test_tc_without_act_nat_fails_before_any_change(pair, run_module, sh):
    result = run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "tc", "rules": RULES[:1]})
    assert result.get("failed"), result
    assert "act_nat" in result["msg"] and "CONFIG_NET_ACT_NAT" in result["msg"] and "backend: nftables" in result["msg"]
    assert "noqueue" in sh(pair.up, "tc qdisc show dev up0")
    assert sh(pair.up, "tc filter show dev up0") == ""


ROLLBACK = textwrap.dedent("""
    import json
    from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import run as tc_nat_filter
    from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ApplyError
    params = {"device": "up0", "backend": "tc", "state": "present",
              "rules": [{"src": "172.16.0.11", "sport": 53, "nat_to": "192.168.99.10"}]}
    try:
        tc_nat_filter.run(params, detect=lambda: (True, "pretended"))
        print(json.dumps({"applied": True}))
    except ApplyError as exc:
        print(json.dumps({"msg": str(exc), "rolled_back": exc.rolled_back}))
""")


@pytest.mark.skipif(ACT_NAT, reason="needs a kernel that refuses act_nat (%s) to fail half-way" % ACT_NAT_HOW)
def test_tc_half_applied_change_is_rolled_back(pair, run_module, sh):
    """Pretend act_nat is there: qdisc, hash table and link go in, the first nat filter is refused, all is undone."""
    proc = ns_python(pair.up, ROLLBACK)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rolled_back"] is True, result
    assert "tc filter add dev up0" in result["msg"] and "act_nat" in result["msg"] and "3 earlier change(s) rolled back" in result["msg"], result
    assert "noqueue" in sh(pair.up, "tc qdisc show dev up0")
    assert sh(pair.up, "tc filter show dev up0") == ""


FOREIGN = textwrap.dedent("""
    import json, sys
    from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import run as tc_nat_filter
    from ansible_collections.netops.ip_transparency.plugins.module_utils._common import NetopsError
    params = {"device": "up0", "backend": "tc", "state": sys.argv[1], "foreign_qdisc": sys.argv[2],
              "rules": [{"src": "172.16.0.11", "sport": 53, "nat_to": "192.168.99.10"}]}
    try:
        result = tc_nat_filter.run(params, check_mode=True, detect=lambda: (True, "pretended"))
        print(json.dumps({"changed": result["changed"], "commands": result["commands"]}))
    except NetopsError as exc:
        print(json.dumps({"msg": str(exc)}))
""")


def test_tc_never_replaces_a_foreign_root_qdisc(pair, sh):
    """Planning alone (check mode, act_nat pretended): a foreign root qdisc is refused, or attached to when allowed."""
    sh(pair.up, "tc qdisc add dev up0 root handle 1: htb default 10")
    refused = json.loads(ns_python(pair.up, FOREIGN, "present", "fail").stdout)
    assert "root qdisc htb 1:" in refused["msg"] and "foreign_qdisc: attach" in refused["msg"], refused
    attached = json.loads(ns_python(pair.up, FOREIGN, "present", "attach").stdout)
    assert attached["changed"] and all("parent 1:" in c for c in attached["commands"]), attached
    assert not any("qdisc" in c.split(" u32")[0] and "tc qdisc" in c for c in attached["commands"])
    sh(pair.up, "tc qdisc del dev up0 root && tc qdisc add dev up0 root handle 1: pfifo")
    refused = json.loads(ns_python(pair.up, FOREIGN, "present", "attach").stdout)
    assert "root qdisc pfifo 1:" in refused["msg"], refused
    assert "qdisc pfifo 1: root" in sh(pair.up, "tc qdisc show dev up0")


# --- persist: the boot files bring the rules back without Ansible ----------------------------------


def boot(sh, ns, unit_path):
    """What systemd does with the unit at boot: its ExecStart commands in order ("-": failure ignored)."""
    with open(unit_path) as handle:
        commands = [line[len("ExecStart="):] for line in handle.read().splitlines() if line.startswith("ExecStart=")]
    assert commands, "the unit runs nothing"
    for command in commands:
        ignore = command.startswith("-")
        sh(ns, command.lstrip("-").replace("%%", "%").replace("$$", "$"), check=not ignore)
    return commands


def persisted(tmp_path, **args):
    return dict(args, persist=True, persist_dir=str(tmp_path / "etc"), unit_dir=str(tmp_path / "units"))


def test_persisted_rules_come_back_after_a_reboot_and_absent_removes_the_boot_files(pair, run_module, sh, tmp_path):
    args = persisted(tmp_path, device="up0", backend="nftables", rules=RULES[:3])
    checked = run_module(pair.up, "tc_nat_filter", args, check=True)
    assert checked["changed"] is True and not (tmp_path / "etc").exists() and not (tmp_path / "units").exists()

    first = run_module(pair.up, "tc_nat_filter", args)
    unit = str(tmp_path / "units" / "netops-nat-up0.service")
    assert first["boot_files"] == sorted([str(tmp_path / "etc" / "nat-up0.nft"), unit,
                                          str(tmp_path / "units" / "multi-user.target.wants" / "netops-nat-up0.service")])
    assert first["diff"] == checked["diff"] and "file %s" % unit in first["diff"]["after"]
    assert os.readlink(first["boot_files"][1]) == unit
    assert run_module(pair.up, "tc_nat_filter", args)["changed"] is False

    # the reboot: the kernel forgets the table; the unit's commands alone bring the rewrite back
    sh(pair.up, "nft delete table netdev netops_nat_up0")
    assert pair.exchange(DATAGRAMS[:1]) == {"a": "172.16.0.11 53"}
    assert boot(sh, pair.up, unit) == ["nft -f %s" % (tmp_path / "etc" / "nat-up0.nft")]
    assert pair.exchange(DATAGRAMS[:3]) == {"a": "%s 53" % VIP, "b": "%s 53" % VIP, "c": "192.168.99.20 53"}
    assert run_module(pair.up, "tc_nat_filter", args)["changed"] is False, "what the boot restored is what the module sets"
    boot(sh, pair.up, unit)  # a restart of the unit while the table is there: still one table, same rules
    assert nft_tables(sh, pair.up) == ["table", "netdev", "netops_nat_up0"]
    assert run_module(pair.up, "tc_nat_filter", args)["changed"] is False

    # persist off: the boot files go (old rules must not come back at boot), the kernel keeps the rules
    kept = run_module(pair.up, "tc_nat_filter", dict(args, persist=False))
    assert kept["changed"] is True and kept["boot_files"] == [] and kept["added"] == kept["removed"] == []
    assert not os.listdir(str(tmp_path / "units" / "multi-user.target.wants")) and not os.listdir(str(tmp_path / "etc"))
    run_module(pair.up, "tc_nat_filter", args)
    gone = run_module(pair.up, "tc_nat_filter", persisted(tmp_path, device="up0", state="absent"))
    assert gone["changed"] is True and gone["boot_files"] == []
    assert nft_tables(sh, pair.up) == [] and not os.path.exists(unit)


# --- exclude_destinations: replies to these destinations keep the upstream's source ----------------------------
#
# The proxy's health checker probes an upstream's DNS from the proxy's private address (172.16.0.1 in the lab) on a
# socket connected to the upstream's address: the reply must come from that address, not from the VIP. Here the
# client's namespace also holds 172.16.0.1 (and fd00:5::3), routed over the veth, standing in for the proxy.

PROBE = "172.16.0.1"
PROBE6 = "fd00:5::3"
EXCLUDED = [PROBE, "198.51.100.0/24", PROBE6]

EXCLUSION_DATAGRAMS = [
    ("sock", "172.16.0.11", 53, "probe", PROBE),  # the health check's reply: excluded, source kept
    ("raw", "172.16.0.12", 53, "probe_raw", PROBE),  # software checksum: untouched, still valid
    ("raw", "172.16.1.11", 53, "probe_other", PROBE),  # a rule with another target: excluded too
    ("sock", "172.16.0.11", 53, "client"),  # a client's reply (10.0.0.2): rewritten
    ("raw", "172.16.0.12", 53, "client_raw"),
]
UNREWRITTEN = {"probe": "172.16.0.11 53", "probe_raw": "172.16.0.12 53", "probe_other": "172.16.1.11 53",
               "client": "172.16.0.11 53", "client_raw": "172.16.0.12 53"}
EXCLUDING = {"probe": "172.16.0.11 53", "probe_raw": "172.16.0.12 53", "probe_other": "172.16.1.11 53",
             "client": "%s 53" % VIP, "client_raw": "%s 53" % VIP}
EXCLUSION_DATAGRAMS6 = [("raw", "2001:db8:16::11", 53, "probe6", PROBE6), ("raw", "2001:db8:16::11", 53, "client6")]


def add_probe_addresses(pair, sh):
    """The proxy's private addresses, on the client's side of the veth.

    Their neighbour entries are set up front: a datagram waiting for ARP or neighbour discovery would arrive after the
    ``end`` datagram (whose neighbour is known) and be counted as lost.
    """
    sh(pair.cl, "ip addr add %s/32 dev cl0 && ip -6 addr add %s/128 dev cl0 nodad" % (PROBE, PROBE6))
    mac = sh(pair.cl, "cat /sys/class/net/cl0/address").strip()
    sh(pair.up, "ip route add %s/32 dev up0" % PROBE)
    for address in (PROBE, PROBE6):
        sh(pair.up, "ip neigh replace %s lladdr %s dev up0 nud permanent" % (address, mac))


def test_nftables_exclude_destinations_keep_the_source_of_replies_to_them(pair, run_module, sh):
    add_probe_addresses(pair, sh)
    assert pair.exchange(EXCLUSION_DATAGRAMS) == UNREWRITTEN

    args = {"device": "up0", "backend": "nftables", "rules": RULES, "exclude_destinations": EXCLUDED}
    checked = run_module(pair.up, "tc_nat_filter", args, check=True)
    assert checked["changed"] is True and checked["rc"] == 0, checked
    assert nft_tables(sh, pair.up) == [], "check mode must not create anything"

    first = run_module(pair.up, "tc_nat_filter", args)
    assert first["changed"] is True and first["backend"] == "nftables", first
    assert first["diff"] == checked["diff"]
    assert first["exclude_destinations"] == ["172.16.0.1/32", "198.51.100.0/24", "fd00:5::3/128"]
    assert "element netdev netops_nat_up0 exclude4 { 172.16.0.1 }" in first["diff"]["after"]
    assert "rule netdev netops_nat_up0 egress ip daddr != @exclude4 ip saddr set" in first["diff"]["after"]
    assert len(first["commands"]) == 1 and first["commands"][0].startswith("nft -f - <<< "), first["commands"]
    listed = sh(pair.up, "nft list table netdev netops_nat_up0")
    print(listed)
    assert "ip daddr != @exclude4 ip saddr set ip saddr . meta l4proto . th sport map @snat4" in listed, listed
    assert "ip6 daddr != @exclude6 ip6 saddr set ip6 saddr . meta l4proto . th sport map @snat6" in listed, listed
    assert "elements = { 172.16.0.1, 198.51.100.0/24 }" in listed and "elements = { fd00:5::3 }" in listed, listed

    assert pair.exchange(EXCLUSION_DATAGRAMS) == EXCLUDING
    assert pair.exchange(EXCLUSION_DATAGRAMS6, version=6) == {"probe6": "2001:db8:16::11 53", "client6": "%s 53" % VIP6}

    again = run_module(pair.up, "tc_nat_filter", args)
    assert again["changed"] is False and again["commands"] == [], again
    assert again["diff"]["before"] == again["diff"]["after"] == first["diff"]["after"]
    # the same destinations spelled otherwise are the same destinations
    spelled = run_module(pair.up, "tc_nat_filter", dict(args, exclude_destinations=[
        "172.16.0.1/32", "198.51.100.128/25", "198.51.100.0/25", "FD00:5:0::3", "172.16.0.1"]))
    assert spelled["changed"] is False, spelled

    # only the exclusions change: one transaction, the rules untouched
    fewer = run_module(pair.up, "tc_nat_filter", dict(args, exclude_destinations=[PROBE]))
    assert fewer["changed"] is True and fewer["added"] == fewer["removed"] == [], fewer
    assert fewer["exclude_destinations"] == ["172.16.0.1/32"] and len(fewer["commands"]) == 1
    assert "exclude6" not in sh(pair.up, "nft list table netdev netops_nat_up0")
    assert pair.exchange(EXCLUSION_DATAGRAMS6, version=6) == {"probe6": "%s 53" % VIP6, "client6": "%s 53" % VIP6}

    # absent with destinations only: those stop being excluded, the rules stay
    part = run_module(pair.up, "tc_nat_filter", {"device": "up0", "exclude_destinations": [PROBE], "state": "absent"})
    assert part["changed"] is True and part["exclude_destinations"] == [] and len(part["rules"]) == 3, part
    assert "exclude4" not in sh(pair.up, "nft list table netdev netops_nat_up0")
    assert pair.exchange(EXCLUSION_DATAGRAMS[:1]) == {"probe": "%s 53" % VIP}

    run_module(pair.up, "tc_nat_filter", args)
    gone = run_module(pair.up, "tc_nat_filter", {"device": "up0", "state": "absent"})
    assert gone["changed"] is True and gone["exclude_destinations"] == [], gone
    assert nft_tables(sh, pair.up) == []
    assert pair.exchange(EXCLUSION_DATAGRAMS) == UNREWRITTEN


def test_nftables_exclusions_persisted_come_back_after_a_reboot(pair, run_module, sh, tmp_path):
    add_probe_addresses(pair, sh)
    args = persisted(tmp_path, device="up0", backend="nftables", rules=RULES[:3], exclude_destinations=[PROBE])
    first = run_module(pair.up, "tc_nat_filter", args)
    assert first["changed"] is True, first
    restore = tmp_path / "etc" / "nat-up0.nft"
    assert "ip daddr != @exclude4 ip saddr set" in restore.read_text() and "elements = { 172.16.0.1 }" in restore.read_text()

    # the reboot: the kernel forgets the table; the unit's commands bring back the rewrite and the exclusion
    sh(pair.up, "nft delete table netdev netops_nat_up0")
    assert pair.exchange(EXCLUSION_DATAGRAMS) == UNREWRITTEN
    boot(sh, pair.up, str(tmp_path / "units" / "netops-nat-up0.service"))
    assert pair.exchange(EXCLUSION_DATAGRAMS) == EXCLUDING
    assert run_module(pair.up, "tc_nat_filter", args)["changed"] is False, "what the boot restored is what the module sets"

    # another exclusion: the restore file follows
    changed = run_module(pair.up, "tc_nat_filter", dict(args, exclude_destinations=["198.51.100.0/24"]))
    assert changed["commands"][-1] == "write %s" % restore, changed["commands"]
    assert "elements = { 198.51.100.0/24 }" in restore.read_text() and "172.16.0.1" not in restore.read_text()
    gone = run_module(pair.up, "tc_nat_filter", persisted(tmp_path, device="up0", state="absent"))
    assert gone["boot_files"] == [] and not restore.exists()


def test_a_failed_change_puts_the_previous_exclusions_back(pair, run_module, sh, tmp_path):
    """The table is loaded, then writing the boot file fails: the table with the old exclusions is loaded back."""
    args = {"device": "up0", "backend": "nftables", "rules": RULES[:1], "exclude_destinations": [PROBE]}
    run_module(pair.up, "tc_nat_filter", args)
    before = sh(pair.up, "nft list table netdev netops_nat_up0")
    failed = run_module(pair.up, "tc_nat_filter", dict(args, exclude_destinations=["198.51.100.0/24"], persist=True,
                                                       persist_dir="/proc/netops-cannot-be-made", unit_dir=str(tmp_path / "units")))
    assert failed.get("failed") and failed["rolled_back"] is True, failed
    assert sh(pair.up, "nft list table netdev netops_nat_up0") == before
    assert run_module(pair.up, "tc_nat_filter", args)["changed"] is False


@pytest.mark.parametrize("excluded, message", [
    (["172.16.0.1", "172.16.0.1/24"], "exclude_destinations[1] '172.16.0.1/24' has host bits set: write 172.16.0.0/24"),
    (["proxy"], "exclude_destinations[0] 'proxy' is not an IPv4 or IPv6 address or prefix"),
    (["fd00:5::3/64"], "exclude_destinations[0] 'fd00:5::3/64' has host bits set"),
])
@pytest.mark.parametrize("backend", ["auto", "nftables", "tc"])
def test_bad_exclusions_fail_before_any_change(pair, run_module, sh, excluded, message, backend):
    result = run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": backend, "rules": RULES[:1], "exclude_destinations": excluded})
    assert result.get("failed") and message in result["msg"], result
    assert nft_tables(sh, pair.up) == []
    assert "noqueue" in sh(pair.up, "tc qdisc show dev up0")


def test_ipv6_exclusion_with_the_tc_backend_is_refused_and_auto_takes_nftables(pair, run_module, sh):
    result = run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "tc", "rules": RULES[:1], "exclude_destinations": [PROBE6]})
    assert result.get("failed") and "exclude_destinations fd00:5::3/128 is IPv6" in result["msg"] and "nftables" in result["msg"], result
    assert "noqueue" in sh(pair.up, "tc qdisc show dev up0")
    auto = run_module(pair.up, "tc_nat_filter", {"device": "up0", "rules": RULES[:1], "exclude_destinations": [PROBE6]}, check=True)
    assert auto["backend"] == "nftables", auto


ROLLBACK_EXCLUDING = ROLLBACK.replace('"rules": [', '"exclude_destinations": ["172.16.0.1"], "rules": [')


@pytest.mark.skipif(ACT_NAT, reason="needs a kernel that refuses act_nat (%s) to fail half-way" % ACT_NAT_HOW)
def test_tc_half_applied_change_with_exclusions_is_rolled_back(pair, sh):
    """Pretend act_nat is there: qdisc and hash table go in, the pass filter (ahead of the link and the nat filters) is
    refused as this kernel has no act_gact either, both are undone."""
    assert ROLLBACK_EXCLUDING != ROLLBACK
    proc = ns_python(pair.up, ROLLBACK_EXCLUDING)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rolled_back"] is True, result
    failed_at = "tc filter add dev up0 parent d5: protocol ip prio 1 handle ::1 u32 match ip dst 172.16.0.1/32 action gact pass failed: "
    assert result["msg"].startswith(failed_at), result
    assert "2 earlier change(s) rolled back" in result["msg"], result
    assert "noqueue" in sh(pair.up, "tc qdisc show dev up0")
    assert sh(pair.up, "tc filter show dev up0") == ""


# --- a device that is gone: state absent still removes what the module left for it (issue 13, defect 4) ------------


def test_absent_on_a_vanished_device_removes_its_boot_files_and_table(pair, run_module, sh, tmp_path):
    """The device was deleted (a veth, a VLAN): its boot files would recreate rules at boot; absent removes them and
    the module's table, which the kernel may keep without its device. present still refuses an unknown device."""
    sh(pair.up, "ip link add gone0 type veth peer name gone1 && ip link set gone0 up")
    args = persisted(tmp_path, device="gone0", backend="nftables", rules=RULES[:1])
    first = run_module(pair.up, "tc_nat_filter", args)
    assert first["changed"] is True and len(first["boot_files"]) == 3, first
    sh(pair.up, "ip link del gone0")

    gone = run_module(pair.up, "tc_nat_filter", persisted(tmp_path, device="gone0", state="absent"))
    assert gone.get("failed") is not True and gone["changed"] is True and gone["boot_files"] == [], gone
    assert not any(os.path.lexists(path) for path in first["boot_files"]), first["boot_files"]
    assert "netops_nat_gone0" not in nft_tables(sh, pair.up)
    again = run_module(pair.up, "tc_nat_filter", persisted(tmp_path, device="gone0", state="absent"))
    assert again.get("failed") is not True and again["changed"] is False, again
    refused = run_module(pair.up, "tc_nat_filter", args)
    assert refused.get("failed") and "unknown interface 'gone0'" in refused["msg"], refused


# --- pyroute2: the tc backend's requests use its public API only (issue 13, defect 8) ---------------------------------

PYROUTE2_REQUESTS = textwrap.dedent("""
    import json
    from pyroute2 import IPRoute
    from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import tc_backend
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname="up0")[0]
        status = getattr(ipr, "status", None)
        before = sorted(status) if isinstance(status, dict) else None
        tc = tc_backend.TcBackend(ipr, "up0", index)
        tc._add_qdisc()
        added = tc.read().root_ours
        tc._del_qdisc()
        removed = not tc.read().exists
        try:
            tc._del_qdisc()
            refused = None
        except tc_backend.TcRequestError as exc:
            refused = [exc.code, str(exc)]
        status = getattr(ipr, "status", None)
        after = sorted(status) if isinstance(status, dict) else None
    print(json.dumps({"added": added, "removed": removed, "refused": refused, "before": before, "after": after}))
""")


def test_tc_requests_go_through_pyroute2s_public_api(pair):
    """With the installed pyroute2 (0.7 or 0.9): a request is sent and acknowledged, a refused one raises with the
    kernel's errno, and pyroute2's internal state is left as it was."""
    proc = ns_python(pair.up, PYROUTE2_REQUESTS)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["added"] is True and result["removed"] is True, result
    assert result["refused"] and result["refused"][0] in (2, 22) and "kernel refused" in result["refused"][1], result
    assert result["before"] == result["after"], "the tc backend changed pyroute2's internal state: %s" % result
