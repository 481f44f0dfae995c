"""Unit tests of tc_nat_filter's logic: rules, act_nat detection, backend choice, plans of both backends, rollback."""

import gzip
import ipaddress
import json

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import nft_backend as nftb
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import tc_backend as tcb
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import model as t
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import kernel as nat_kernel
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import run as nat_run
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import KernelFeatureError, ValidationError

VIP = "192.168.99.10"


def rules(*items):
    return t.normalise_rules([dict(zip(("src", "sport", "nat_to", "protocol"), item)) for item in items])


def rule(src, sport=53, nat_to=VIP, protocol="udp"):
    return t.Rule(ipaddress.ip_network(src), protocol, sport, ipaddress.ip_address(nat_to))


# --- rules ------------------------------------------------------------------------------------------

def test_normalise_defaults_and_spellings():
    assert t.normalise_rules([{"src": "172.16.0.11", "sport": "53", "nat_to": VIP}]) == [rule("172.16.0.11/32")]
    assert t.normalise_rules([{"src": "2001:DB8::/64", "sport": 53, "nat_to": "2001:db8:0::1", "protocol": "TCP"}]) == [
        rule("2001:db8::/64", nat_to="2001:db8::1", protocol="tcp")]
    assert t.normalise_rules(None) == []
    assert rule("172.16.0.11/32").as_dict() == {"src": "172.16.0.11/32", "protocol": "udp", "sport": 53, "nat_to": VIP}


@pytest.mark.parametrize("raw, message", [
    ({"src": "172.16.0.11", "nat_to": VIP}, r"rules\[0\].sport is required"),
    ({"sport": 53, "nat_to": VIP}, r"rules\[0\].src is required"),
    ({"src": "172.16.0.11", "sport": 53}, r"rules\[0\].nat_to is required"),
    ({"src": "172.16.0.11", "sport": 53, "nat_to": VIP, "dport": 1}, "unknown key"),
    ({"src": "172.16.0.11", "sport": True, "nat_to": VIP}, "not a port number"),
    ({"src": "172.16.0.11", "sport": "dns", "nat_to": VIP}, "not a number"),
    ({"src": "172.16.0.11", "sport": 65536, "nat_to": VIP}, "out of range 1-65535"),
    ({"src": "172.16.0.11", "sport": 53, "nat_to": VIP, "protocol": "sctp"}, "not one of udp, tcp"),
    ({"src": "172.16.0.1/24", "sport": 53, "nat_to": VIP}, "host bits set: write 172.16.0.0/24"),
    ({"src": "172.16.0.300", "sport": 53, "nat_to": VIP}, "not an IPv4 or IPv6 address or prefix"),
    ({"src": "172.16.0.11", "sport": 53, "nat_to": "192.168.99.0/24"}, "not an IPv4 or IPv6 address"),
    ({"src": "172.16.0.11", "sport": 53, "nat_to": "2001:db8::1"}, "mix IPv4 and IPv6"),
    ("172.16.0.11", "must be a dict"),
])
def test_normalise_refuses(raw, message):
    with pytest.raises(ValidationError, match=message):
        t.normalise_rules([raw])


def test_contiguous_upstreams_collapse():
    got = rules(("172.16.0.8/30", 53, VIP), ("172.16.0.12", 53, VIP), ("172.16.0.13", 53, VIP), ("172.16.0.14/31", 53, VIP))
    assert got == [rule("172.16.0.8/29")]
    # different port, protocol or target: no merge
    got = rules(("172.16.0.8/30", 53, VIP), ("172.16.0.12/30", 54, VIP), ("172.16.0.16/30", 53, "192.168.99.11"),
                ("172.16.0.20/30", 53, VIP, "tcp"))
    assert len(got) == 4
    # overlapping with the same target: the larger prefix wins
    assert rules(("172.16.0.0/28", 53, VIP), ("172.16.0.11", 53, VIP)) == [rule("172.16.0.0/28")]


def test_conflicting_rewrites_are_refused():
    with pytest.raises(ValidationError, match="rules conflict: udp sport 53 from 172.16.0.11/32"):
        rules(("172.16.0.0/28", 53, VIP), ("172.16.0.11", 53, "192.168.99.20"))
    # the same sources on another port or protocol do not conflict
    assert len(rules(("172.16.0.0/28", 53, VIP), ("172.16.0.11", 53, "192.168.99.20", "tcp"))) == 2


def test_subtract_address_wise():
    have = [rule("172.16.0.8/29"), rule("172.16.0.11/32", 54)]
    assert t.subtract(have, [rule("172.16.0.12/32")]) == [rule("172.16.0.8/30"), rule("172.16.0.13/32"), rule("172.16.0.14/31"), rule("172.16.0.11/32", 54)]
    assert t.subtract(have, [rule("172.16.0.0/24")]) == [rule("172.16.0.11/32", 54)]
    assert t.subtract(have, [rule("172.16.0.8/29", nat_to="10.0.0.1")]) == have  # another target: not that rule
    assert t.subtract(have, []) == have


def test_tc_unsupported():
    assert t.tc_unsupported([rule("172.16.0.0/24")]) is None
    assert "IPv4-only" in t.tc_unsupported([rule("2001:db8::/64", nat_to="2001:db8::1")])
    assert "512 addresses" in t.tc_unsupported([rule("172.16.0.0/23")])


# --- act_nat detection --------------------------------------------------------------------------------

@pytest.fixture
def kernel(tmp_path):
    """A fake /proc, /lib/modules and /boot; returns a detect() over them and the paths."""
    proc, modules, boot = tmp_path / "proc", tmp_path / "lib-modules", tmp_path / "boot"
    for folder in (proc, modules / "6.1.0-test", boot):
        folder.mkdir(parents=True)
    (proc / "modules").write_text("veth 40960 0 - Live 0x0\n")
    (proc / "kallsyms").write_text("ffffffff81000000 T _stext\nffffffff81ef0240 T tcf_mirred_act\n")

    class Kernel(object):
        moddir = modules / "6.1.0-test"

        def detect(self):
            return nat_kernel.act_nat_support("6.1.0-test", str(proc), str(modules), str(boot))

    kernel = Kernel()
    kernel.proc, kernel.boot = proc, boot
    return kernel


def test_detect_nothing(kernel):
    assert kernel.detect() == (False, "no act_nat: not loaded, not built in, no module under %s, no kernel config found" % kernel.moddir)


def test_detect_loaded(kernel):
    (kernel.proc / "modules").write_text("act_nat 16384 1 - Live 0x0\n")
    assert kernel.detect()[0] is True


@pytest.mark.parametrize("line, module, expected", [
    ("CONFIG_NET_ACT_NAT=y", False, (True, "CONFIG_NET_ACT_NAT=y")),
    ("# CONFIG_NET_ACT_NAT is not set", True, (False, "CONFIG_NET_ACT_NAT is not set")),
    ("CONFIG_NET_ACT_NAT=m", True, (True, "CONFIG_NET_ACT_NAT=m")),
    ("CONFIG_NET_ACT_NAT=m", False, (False, "but no act_nat module")),
])
@pytest.mark.parametrize("where", ["proc", "boot"])
def test_detect_from_the_kernel_config(kernel, line, module, expected, where):
    text = "CONFIG_NET_SCH_HTB=y\n%s\n" % line
    if where == "proc":
        with gzip.open(str(kernel.proc / "config.gz"), "wt") as handle:
            handle.write(text)
    else:
        (kernel.boot / "config-6.1.0-test").write_text(text)
    if module:
        (kernel.moddir / "kernel/net/sched").mkdir(parents=True)
        (kernel.moddir / "kernel/net/sched/act_nat.ko.xz").write_bytes(b"")
        (kernel.moddir / "modules.dep").write_text("kernel/net/sched/act_nat.ko.xz:\nkernel/net/sched/act_gact.ko.xz:\n")
    available, how = kernel.detect()
    assert available is expected[0] and expected[1] in how


def test_detect_from_modules_files(kernel):
    (kernel.moddir / "modules.builtin").write_text("kernel/net/sched/act_nat.ko\n")
    assert kernel.detect() == (True, "act_nat is built in (%s/modules.builtin)" % kernel.moddir)
    (kernel.moddir / "modules.builtin").write_text("kernel/net/sched/act_natx.ko\n")
    (kernel.moddir / "modules.dep").write_text("kernel/net/sched/act_nat.ko:\n")
    assert kernel.detect()[0] is False  # listed, but the file is missing
    (kernel.moddir / "kernel/net/sched").mkdir(parents=True)
    (kernel.moddir / "kernel/net/sched/act_nat.ko").write_bytes(b"")
    assert kernel.detect()[0] is True


def test_detect_from_kallsyms(kernel):
    (kernel.proc / "kallsyms").write_text("ffffffff81ef0240 t tcf_nat_act\n")
    assert kernel.detect() == (True, "tcf_nat_act is in %s/kallsyms" % kernel.proc)


def test_detect_reads_only(kernel):
    before = sorted(str(p) for p in kernel.proc.parent.rglob("*"))
    kernel.detect()
    assert sorted(str(p) for p in kernel.proc.parent.rglob("*")) == before


# --- backend choice -------------------------------------------------------------------------------------

YES = staticmethod(lambda: (True, "act_nat module /lib/modules/x/act_nat.ko"))
NO = staticmethod(lambda: (False, "CONFIG_NET_ACT_NAT is not set in /proc/config.gz"))


@pytest.mark.parametrize("requested, detect, rule_list, expected", [
    ("auto", YES, [rule("172.16.0.11/32")], "tc"),
    ("auto", NO, [rule("172.16.0.11/32")], "nftables"),
    ("auto", YES, [rule("2001:db8::/64", nat_to="2001:db8::1")], "nftables"),
    ("auto", YES, [rule("172.16.0.0/16")], "nftables"),
    ("tc", YES, [rule("172.16.0.11/32")], "tc"),
    ("nftables", YES, [rule("172.16.0.11/32")], "nftables"),
])
def test_choose_backend(requested, detect, rule_list, expected):
    assert nat_run.choose_backend(requested, rule_list, "present", detect.__func__)[0] == expected


def test_tc_without_act_nat_names_the_feature_and_the_alternative():
    with pytest.raises(KernelFeatureError) as info:
        nat_run.choose_backend("tc", [rule("172.16.0.11/32")], "present", NO.__func__)
    assert "act_nat" in str(info.value) and "CONFIG_NET_ACT_NAT" in str(info.value) and "backend: nftables" in str(info.value)
    # absent needs no act_nat: it only removes
    assert nat_run.choose_backend("tc", [], "absent", NO.__func__)[0] == "tc"


def test_ipv6_with_tc_is_an_input_error():
    with pytest.raises(ValidationError, match="IPv4-only"):
        nat_run.choose_backend("tc", [rule("2001:db8::/64", nat_to="2001:db8::1")], "present", YES.__func__)


# --- the tc backend's plan -------------------------------------------------------------------------------

class FakeIPR(object):
    """Records the requests instead of sending them."""

    def __init__(self):
        self.sent = []

    def nlm_request_batch(self, msgs):
        self.sent.extend((msg["header"]["type"], msg) for msg in msgs)
        return []


def backend(foreign_qdisc="fail"):
    return tcb.TcBackend(FakeIPR(), "eth0", 2, foreign_qdisc)


def leaf(src, nat_to=VIP, protocol="udp", sport=53, control="continue", node=0x800):
    address = ipaddress.ip_address(src)
    return tcb.Leaf(address, protocol, sport, ipaddress.ip_address(nat_to), control, tcb.OWN_HTID | (int(address) & 0xFF) << 12 | node)


def ours(*leaves):
    state = tcb.TcState()
    state.root_kind, state.root_handle, state.root_default, state.root_ours = "htb", tcb.OWN_QDISC, False, True
    state.parent, state.has_ht, state.link_handle = tcb.OWN_QDISC, True, 0x80000800
    state.leaves = list(leaves)
    return state


def test_plan_from_the_default_qdisc():
    plan = backend().plan(tcb.TcState(), [rule("172.16.0.10/31")])
    assert [s.line for s in plan.steps] == [
        "tc qdisc add dev eth0 root handle d5: htb default d5d5",
        "tc filter add dev eth0 parent d5: protocol ip prio 1 handle d5: u32 divisor 256",
        "tc filter add dev eth0 parent d5: protocol ip prio 1 u32 link d5: hashkey mask 0x000000ff at 12 match u32 0 0",
        "tc filter add dev eth0 parent d5: protocol ip prio 1 handle d5:a:800 u32 ht d5:a: match ip src 172.16.0.10/32 match ip protocol 17 0xff "
        "match ip sport 53 0xffff action nat egress 172.16.0.10/32 192.168.99.10 continue",
        "tc filter add dev eth0 parent d5: protocol ip prio 1 handle d5:b:800 u32 ht d5:b: match ip src 172.16.0.11/32 match ip protocol 17 0xff "
        "match ip sport 53 0xffff action nat egress 172.16.0.11/32 192.168.99.10 continue",
    ]
    assert plan.before == [] and plan.after[0] == "qdisc htb d5: root default d5d5" and len(plan.after) == 5


def test_plan_is_empty_when_everything_is_there():
    state = ours(leaf("172.16.0.10"), leaf("172.16.0.11"))
    plan = backend().plan(state, [rule("172.16.0.10/31")])
    assert plan.steps == [] and plan.before == plan.after


def test_plan_changes_only_what_differs():
    state = ours(leaf("172.16.0.10"), leaf("172.16.0.11", nat_to="192.168.99.20"), leaf("172.16.1.11", control="pass", node=0x801),
                 leaf("172.16.0.12"))
    plan = backend().plan(state, [rule("172.16.0.10/31"), rule("172.16.1.11/32")])
    assert [s.line.split(" u32")[0] for s in plan.steps] == [
        "tc filter del dev eth0 parent d5: protocol ip prio 1 handle d5:b:800",
        "tc filter del dev eth0 parent d5: protocol ip prio 1 handle d5:c:800",
        "tc filter del dev eth0 parent d5: protocol ip prio 1 handle d5:b:801",
        "tc filter add dev eth0 parent d5: protocol ip prio 1 handle d5:b:802",  # a handle no old filter had
        "tc filter add dev eth0 parent d5: protocol ip prio 1 handle d5:b:803",
    ]


def test_plan_refuses_a_foreign_root_qdisc_unless_allowed():
    state = tcb.TcState()
    state.root_kind, state.root_handle, state.root_default = "htb", 0x10000, False
    with pytest.raises(ValidationError, match="root qdisc htb 1: that tc_nat_filter did not create"):
        backend().plan(state, [rule("172.16.0.11/32")])
    plan = backend("attach").plan(state, [rule("172.16.0.11/32")])
    assert not any(s.line.startswith("tc qdisc") for s in plan.steps)
    assert all(" parent 1: " in s.line for s in plan.steps)
    state.root_kind = "fq_codel"
    with pytest.raises(ValidationError, match="root qdisc fq_codel 1:"):
        backend("attach").plan(state, [rule("172.16.0.11/32")])


def test_plan_refuses_to_share_its_prio():
    state = ours()
    state.foreign_at_prio = [{"kind": "u32"}]
    with pytest.raises(ValidationError, match="prio 1 of qdisc d5: on eth0 holds filters tc_nat_filter did not create"):
        backend().plan(state, [rule("172.16.0.11/32")])


def test_removal_deletes_the_prio_then_the_qdisc_and_undo_rebuilds():
    state = ours(leaf("172.16.0.11"))
    tc = backend()
    plan = tc.plan(state, [])
    assert [s.line for s in plan.steps] == ["tc filter del dev eth0 parent d5: protocol ip prio 1 u32", "tc qdisc del dev eth0 root handle d5: htb"]
    assert plan.after == []
    plan.steps[0].do()
    plan.steps[0].undo()
    assert [m[0] for m in tc.ipr.sent] == [tcb.RTM_DELTFILTER, tcb.RTM_NEWTFILTER, tcb.RTM_NEWTFILTER, tcb.RTM_NEWTFILTER]
    assert tc.ipr.sent[-1][1]["handle"] == state.leaves[0].handle  # the filter comes back with its handle


def test_removal_keeps_a_qdisc_that_others_use():
    state = ours(leaf("172.16.0.11"))
    state.other_filters = 1
    assert [s.line for s in backend().plan(state, []).steps] == ["tc filter del dev eth0 parent d5: protocol ip prio 1 u32"]
    state.foreign_at_prio = [{"kind": "u32"}]
    lines = [s.line for s in backend().plan(state, []).steps]
    assert lines == ["tc filter del dev eth0 parent d5: protocol ip prio 1 handle d5:b:800 u32",
                     "tc filter del dev eth0 parent d5: protocol ip prio 1 handle 800:0:800 u32",
                     "tc filter del dev eth0 parent d5: protocol ip prio 1 handle d5: u32"]


def test_classify_knows_the_modules_filters_from_their_bytes():
    """Messages as the backend writes them, decoded as dumps are: each lands where it belongs."""
    tc = backend()
    state = tcb.TcState()

    def entry(msg, handle=None):
        data = tcb.encode(msg, tcb.RTM_NEWTFILTER, 0)
        decoded = tcb.decode_message(data)
        if handle is not None:
            decoded["handle"] = handle
        return decoded

    assert tc._classify(state, entry(tcb.divisor_message(2, tcb.OWN_QDISC)))
    assert tc._classify(state, entry(tcb.link_message(2, tcb.OWN_QDISC), 0x80000800))
    assert tc._classify(state, entry(tcb.leaf_message(2, tcb.OWN_QDISC, "172.16.0.11", "tcp", 8443, VIP), 0x0D50B800))
    assert (state.has_ht, state.link_handle) == (True, 0x80000800)
    assert state.leaves == [tcb.Leaf(ipaddress.ip_address("172.16.0.11"), "tcp", 8443, ipaddress.ip_address(VIP), "continue", 0x0D50B800)]
    assert state.rules == [rule("172.16.0.11/32", 8443, protocol="tcp")]
    # a nat filter in the wrong bucket, or matching something else, is not the module's
    wrong = tcb.nat_filter_message(2, tcb.OWN_QDISC, 1, tcb.leaf_keys(ipaddress.ip_address("172.16.0.11"), "udp", 53), "172.16.0.11/32", VIP,
                                   control="continue", hash_table=tcb.OWN_HTID | 0x0C000)
    assert not tc._classify(state, entry(wrong, 0x0D50C800))
    assert not tc._classify(state, entry(tcb.divisor_message(2, tcb.OWN_QDISC, htid=0x0D600000)))


def test_expand_one_filter_per_address():
    got = tcb.expand([rule("172.16.0.8/30"), rule("172.16.1.11/32", nat_to="192.168.99.20")])
    assert len(got) == 5 and got[(ipaddress.ip_address("172.16.1.11"), "udp", 53)] == ipaddress.ip_address("192.168.99.20")


def test_free_handle_avoids_handles_in_use():
    used = {0x0D50B800, 0x0D50B801}
    assert tcb.TcBackend._free_handle(ipaddress.ip_address("10.0.0.11"), used) == 0x0D50B802
    assert tcb.fmt_handle(0x0D50B802) == "d5:b:802"


# --- the nftables backend ------------------------------------------------------------------------------------

def test_table_names_are_safe_and_distinct():
    assert nftb.table_name("eth0") == "netops_nat_eth0"
    assert nftb.table_name("eth0.100") == "netops_nat_eth0_2e100"
    assert nftb.table_name("eth0_2e100") == "netops_nat_eth0_5f2e100"
    assert nftb.table_name("br-lan") == "netops_nat_br_2dlan"


def test_render_table():
    text = nftb.render_table("eth0", [rule("172.16.0.8/29"), rule("172.16.1.11/32"), rule("2001:db8::/64", nat_to="2001:db8::1", protocol="tcp")])
    assert 'comment "netops.ip_transparency.tc_nat_filter device=eth0"' in text
    assert "elements = { 172.16.0.8/29 . udp . 53 : 192.168.99.10,\n\t\t\t172.16.1.11 . udp . 53 : 192.168.99.10 }" in text
    assert "elements = { 2001:db8::/64 . tcp . 53 : 2001:db8::1 }" in text
    assert 'type filter hook egress device "eth0" priority 0; policy accept;' in text
    assert "ip saddr set ip saddr . meta l4proto . th sport map @snat4" in text
    script = nftb.replace_script("eth0", [])
    assert script.startswith("table netdev netops_nat_eth0 {}\ndelete table netdev netops_nat_eth0\ntable netdev netops_nat_eth0 {")
    assert "elements" not in script


def _mangle_rule(handle, fam, name):
    key = {"concat": [{"payload": {"protocol": fam, "field": "saddr"}}, {"meta": {"key": "l4proto"}},
                      {"payload": {"protocol": "th", "field": "sport"}}]}
    return {"rule": {"family": "netdev", "table": "netops_nat_eth0", "chain": "egress", "handle": handle, "expr": [
        {"mangle": {"key": {"payload": {"protocol": fam, "field": "saddr"}}, "value": {"map": {"key": key, "data": "@%s" % name}}}}]}}


# what `nft -j list table` (nftables 1.0.6) printed for a table this module wrote
LISTED = {"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
    {"table": {"family": "netdev", "name": "netops_nat_eth0", "handle": 3}},
    {"map": {"family": "netdev", "name": "snat4", "table": "netops_nat_eth0", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 2,
             "map": "ipv4_addr", "flags": ["interval"], "elem": [
                 [{"concat": [{"prefix": {"addr": "172.16.0.8", "len": 29}}, "udp", 53]}, "192.168.99.10"],
                 [{"concat": [{"range": ["10.0.0.1", "10.0.0.6"]}, "tcp", 8443]}, "1.2.3.4"]]}},
    {"map": {"family": "netdev", "name": "snat6", "table": "netops_nat_eth0", "type": ["ipv6_addr", "inet_proto", "inet_service"], "handle": 3,
             "map": "ipv6_addr", "flags": ["interval"], "elem": [[{"concat": ["2001:db8::11", 17, 53]}, "2001:db8:1::1"]]}},
    {"chain": {"family": "netdev", "table": "netops_nat_eth0", "name": "egress", "handle": 1, "type": "filter", "hook": "egress", "prio": 0,
               "policy": "accept"}},
] + [_mangle_rule(4 + i, fam, name) for i, (fam, name) in enumerate((("ip", "snat4"), ("ip6", "snat6")))]}


def read_listed(listed, text=None):
    class Fake(nftb.NftBackend):
        def _run(self, args, stdin=None):
            if args[0] == "-j":
                return 0, json.dumps(listed), ""
            if text is not None:
                return 0, text, ""
            header = 'table netdev netops_nat_eth0 {\n\tcomment "%s"\n\t\ttype filter hook egress device "eth0" priority filter;'
            return 0, header % nftb.comment("eth0"), ""

    return Fake("eth0", nft="/usr/sbin/nft")


def test_read_back_a_table_the_module_wrote():
    nft = read_listed(LISTED)
    state = nft.read()
    assert state.exists and state.ours and state.intact, state.problems
    assert sorted(map(str, state.rules)) == sorted([
        "10.0.0.1/32 tcp sport 8443 -> 1.2.3.4", "10.0.0.2/31 tcp sport 8443 -> 1.2.3.4", "10.0.0.4/31 tcp sport 8443 -> 1.2.3.4",
        "10.0.0.6/32 tcp sport 8443 -> 1.2.3.4", "172.16.0.8/29 udp sport 53 -> 192.168.99.10", "2001:db8::11/128 udp sport 53 -> 2001:db8:1::1"])
    assert nft.plan(state, state.rules).steps == []
    assert len(nft.plan(state, state.rules[:1]).steps) == 1


def test_drift_is_rewritten_and_foreign_tables_refused():
    listed = json.loads(json.dumps(LISTED))
    listed["nftables"].pop()  # the IPv6 rule is gone
    nft = read_listed(listed)
    state = nft.read()
    assert state.ours and not state.intact and state.problems == ["chain rules differ from the module's"]
    plan = nft.plan(state, state.rules)
    assert len(plan.steps) == 1 and plan.before[1] == "# drift: chain rules differ from the module's"
    foreign = read_listed(LISTED, text="table netdev netops_nat_eth0 {\n}")
    state = foreign.read()
    assert state.exists and not state.ours
    with pytest.raises(ValidationError, match="not created by tc_nat_filter"):
        foreign.plan(state, [rule("172.16.0.11/32")])
    assert foreign.plan(state, []).steps == []


def test_missing_table_and_missing_nft():
    class Absent(nftb.NftBackend):
        def _run(self, args, stdin=None):
            return 1, "", "Error: No such file or directory\nlist table netdev netops_nat_eth0\n"

    state = Absent("eth0", nft="/usr/sbin/nft").read()
    assert not state.exists and state.lines("eth0") == []
    nft = nftb.NftBackend("eth0")
    nft.nft = None
    assert not nft.read().exists
    with pytest.raises(KernelFeatureError, match="needs the nft command"):
        nft.read(required=True)


# --- many upstreams: fewer rules, lookups that do not grow with their number ----------------------------------

def test_many_contiguous_upstreams_are_one_nft_element_and_two_rules():
    many = t.normalise_rules([{"src": "172.16.%d.%d" % (i // 256, i % 256), "sport": 53, "nat_to": VIP} for i in range(1024)])
    assert many == [rule("172.16.0.0/22")]
    text = nftb.render_table("eth0", many)
    assert text.count(" : 192.168.99.10") == 1 and text.count("saddr set") == 2


def test_tc_filters_spread_over_the_hash_buckets():
    """A packet is compared with the filters of one bucket: the upstreams sharing its last octet."""
    plan = backend().plan(tcb.TcState(), [rule("172.16.0.0/24"), rule("172.16.1.0/24", nat_to="192.168.99.20")])
    buckets = {}
    for step in plan.steps:
        if " ht d5:" in step.line:
            bucket = step.line.split(" ht d5:")[1].split(":")[0]
            buckets[bucket] = buckets.get(bucket, 0) + 1
    assert len(buckets) == 256 and max(buckets.values()) == 2


# --- exclude_destinations: replies to these destinations are never rewritten ----------------------------------

def net(text):
    return ipaddress.ip_network(text)


def test_exclusions_normalise_collapse_and_sort():
    got = t.normalise_exclusions(["198.51.100.128/25", "FD00:5::3", "172.16.0.1", " 172.16.0.1/32", "198.51.100.0/25"])
    assert got == [net("172.16.0.1/32"), net("198.51.100.0/24"), net("fd00:5::3/128")]
    assert t.normalise_exclusions(None) == [] and t.normalise_exclusions([]) == []
    # a prefix swallows the addresses inside it
    assert t.normalise_exclusions(["172.16.0.1", "172.16.0.0/24"]) == [net("172.16.0.0/24")]


@pytest.mark.parametrize("item, message", [
    ("172.16.0.1/24", r"exclude_destinations\[1\] '172.16.0.1/24' has host bits set: write 172.16.0.0/24 for the network or 172.16.0.1/32"),
    ("fd00:5::3/64", r"exclude_destinations\[1\] 'fd00:5::3/64' has host bits set"),
    ("proxy", r"exclude_destinations\[1\] 'proxy' is not an IPv4 or IPv6 address or prefix"),
    ("", r"exclude_destinations\[1\] '' is not an IPv4 or IPv6 address or prefix"),
    ("172.16.0.300", r"exclude_destinations\[1\] '172.16.0.300' is not an IPv4 or IPv6 address or prefix"),
    ({"dst": "172.16.0.1"}, r"exclude_destinations\[1\] must be an address or prefix \(a string\), got \{'dst': '172.16.0.1'\}"),
    (None, r"exclude_destinations\[1\] must be an address or prefix \(a string\), got None"),
    (True, r"exclude_destinations\[1\] must be an address or prefix \(a string\), got True"),
])
def test_exclusions_refuse_bad_items_naming_them(item, message):
    with pytest.raises(ValidationError, match=message):
        t.normalise_exclusions(["172.16.0.2", item])


def test_exclusions_must_be_a_list():
    with pytest.raises(ValidationError, match="exclude_destinations must be a list"):
        t.normalise_exclusions("172.16.0.1")


def test_subtract_networks_address_wise():
    have = [net("172.16.0.0/30"), net("fd00:5::3/128")]
    assert t.subtract_networks(have, [net("172.16.0.1/32")]) == [net("172.16.0.0/32"), net("172.16.0.2/31"), net("fd00:5::3/128")]
    assert t.subtract_networks(have, [net("0.0.0.0/0")]) == [net("fd00:5::3/128")]
    assert t.subtract_networks(have, []) == have


def test_tc_refuses_ipv6_exclusions_and_too_many():
    assert t.tc_unsupported([rule("172.16.0.11/32")], [net("172.16.0.1/32")]) is None
    problem = t.tc_unsupported([rule("172.16.0.11/32")], [net("fd00:5::3/128")])
    assert "exclude_destinations fd00:5::3/128 is IPv6" in problem and "backend nftables" in problem
    many = [net("10.%d.%d.0/24" % (i // 256, i % 256)) for i in range(0, 4096, 2)]  # 2048 disjoint prefixes
    assert "2048 exclusions" in t.tc_unsupported([rule("172.16.0.11/32")], many)
    assert t.tc_unsupported([rule("172.16.0.11/32")], many[:t.TC_MAX_EXCLUSIONS]) is None


def test_choose_backend_with_exclusions():
    v6 = [net("fd00:5::3/128")]
    assert nat_run.choose_backend("auto", [rule("172.16.0.11/32")], "present", YES.__func__, v6)[0] == "nftables"
    assert nat_run.choose_backend("auto", [rule("172.16.0.11/32")], "present", YES.__func__, [net("172.16.0.1/32")])[0] == "tc"
    with pytest.raises(ValidationError, match="is IPv6"):
        nat_run.choose_backend("tc", [rule("172.16.0.11/32")], "present", YES.__func__, v6)


EXISTING = {"tc": ([rule("172.16.0.8/30")], [net("172.16.0.1/32"), net("172.16.0.2/32")]), "nftables": ([], [])}


@pytest.mark.parametrize("state, rules_in, excl_in, looked, expected", [
    # present: the chosen backend gets the rules and the exclusions, the other nothing
    ("present", [rule("172.16.0.11/32")], [net("172.16.0.1/32")], ("tc",),
     {"tc": ([rule("172.16.0.11/32")], [net("172.16.0.1/32")]), "nftables": ([], [])}),
    # exclusions exist only alongside rules
    ("present", [], [net("172.16.0.1/32")], ("tc",), {"tc": ([], []), "nftables": ([], [])}),
    # absent, nothing listed: everything goes
    ("absent", [], [], ("tc", "nftables"), {"tc": ([], []), "nftables": ([], [])}),
    # absent, only exclusions listed: those go, the rules stay
    ("absent", [], [net("172.16.0.1/32")], ("tc", "nftables"),
     {"tc": ([rule("172.16.0.8/30")], [net("172.16.0.2/32")]), "nftables": ([], [])}),
    # absent, some rules listed: those go, the exclusions stay while a rule is left
    ("absent", [rule("172.16.0.8/32")], [], ("tc", "nftables"),
     {"tc": ([rule("172.16.0.9/32"), rule("172.16.0.10/31")], [net("172.16.0.1/32"), net("172.16.0.2/32")]), "nftables": ([], [])}),
    # absent, every rule listed: no rule left, no exclusion left
    ("absent", [rule("172.16.0.8/30")], [], ("tc", "nftables"), {"tc": ([], []), "nftables": ([], [])}),
    # a backend not looked at keeps what it has
    ("absent", [], [], ("nftables",), {"tc": EXISTING["tc"], "nftables": ([], [])}),
])
def test_wanted_objects(state, rules_in, excl_in, looked, expected):
    assert t.wanted_objects(state, "tc", looked, rules_in, excl_in, EXISTING) == expected


# the tc backend: one pass filter per excluded prefix in prio 1's root table, ahead of the link (node 800)

PASS_LINES = [
    "tc filter add dev eth0 parent d5: protocol ip prio 1 handle ::1 u32 match ip dst 172.16.0.1/32 action gact pass",
    "tc filter add dev eth0 parent d5: protocol ip prio 1 handle ::2 u32 match ip dst 198.51.100.0/24 action gact pass",
]


def test_plan_with_exclusions_from_the_default_qdisc():
    plan = backend().plan(tcb.TcState(), [rule("172.16.0.11/32")], [net("172.16.0.1/32"), net("198.51.100.0/24")])
    lines = [s.line for s in plan.steps]
    # the passes go in before the link: no moment where an excluded reply is rewritten
    assert lines[:5] == [
        "tc qdisc add dev eth0 root handle d5: htb default d5d5",
        "tc filter add dev eth0 parent d5: protocol ip prio 1 handle d5: u32 divisor 256",
    ] + PASS_LINES + ["tc filter add dev eth0 parent d5: protocol ip prio 1 u32 link d5: hashkey mask 0x000000ff at 12 match u32 0 0"]
    assert len(lines) == 6 and " nat egress 172.16.0.11/32 " in lines[5]
    assert plan.after[:3] == ["qdisc htb d5: root default d5d5", "filter parent d5: protocol ip prio 1 handle d5: u32 divisor 256",
                              "filter parent d5: protocol ip prio 1 handle ::1 u32 match ip dst 172.16.0.1/32 action gact pass"]


def passed(state, *dsts):
    state.passes = [tcb.Pass(net(dst), 0x80000000 | (i + 1)) for i, dst in enumerate(dsts)]
    return state


def test_plan_with_exclusions_is_empty_when_everything_is_there_and_changes_only_passes():
    state = passed(ours(leaf("172.16.0.11")), "172.16.0.1/32", "198.51.100.0/24")
    assert state.exclusions == [net("172.16.0.1/32"), net("198.51.100.0/24")]
    assert state.exists
    plan = backend().plan(state, [rule("172.16.0.11/32")], [net("198.51.100.0/24"), net("172.16.0.1/32")])
    assert plan.steps == [] and plan.before == plan.after
    assert "filter parent d5: protocol ip prio 1 handle ::2 u32 match ip dst 198.51.100.0/24 action gact pass" in plan.before
    plan = backend().plan(state, [rule("172.16.0.11/32")], [net("172.16.0.1/32"), net("203.0.113.0/24")])
    assert [s.line for s in plan.steps] == [
        "tc filter del dev eth0 parent d5: protocol ip prio 1 handle 800:0:2 u32",
        "tc filter add dev eth0 parent d5: protocol ip prio 1 handle ::3 u32 match ip dst 203.0.113.0/24 action gact pass",
    ]
    # no exclusion wanted: the passes go, the rewrite stays
    plan = backend().plan(state, [rule("172.16.0.11/32")])
    assert [s.line for s in plan.steps] == ["tc filter del dev eth0 parent d5: protocol ip prio 1 handle 800:0:1 u32",
                                            "tc filter del dev eth0 parent d5: protocol ip prio 1 handle 800:0:2 u32"]


def test_pass_steps_undo_and_send_the_filters():
    tc = backend()
    state = passed(ours(leaf("172.16.0.11")), "172.16.0.1/32")
    plan = tc.plan(state, [rule("172.16.0.11/32")], [net("198.51.100.0/24")])
    for step in plan.steps:
        step.do()
    for step in reversed(plan.steps):
        step.undo()
    sent = [(m[0], m[1]["handle"]) for m in tc.ipr.sent]
    # added with its node id alone (the kernel puts it in the prio's root table), deleted with the whole handle
    assert sent == [(tcb.RTM_DELTFILTER, 0x80000001), (tcb.RTM_NEWTFILTER, 0x2), (tcb.RTM_DELTFILTER, 0x80000002), (tcb.RTM_NEWTFILTER, 0x1)]


def test_plan_refuses_exclusions_on_a_foreign_qdisc():
    state = tcb.TcState()
    state.root_kind, state.root_handle, state.root_default = "htb", 0x10000, False
    with pytest.raises(ValidationError, match="exclude_destinations cannot be written on eth0: .* root qdisc htb 1:, which tc_nat_filter did not create"):
        backend("attach").plan(state, [rule("172.16.0.11/32")], [net("172.16.0.1/32")])
    assert backend("attach").plan(state, [rule("172.16.0.11/32")]).steps


def test_removal_takes_the_passes_along_and_undo_puts_them_back():
    state = passed(ours(leaf("172.16.0.11")), "172.16.0.1/32")
    tc = backend()
    plan = tc.plan(state, [], [net("172.16.0.1/32")])
    assert [s.line for s in plan.steps] == ["tc filter del dev eth0 parent d5: protocol ip prio 1 u32", "tc qdisc del dev eth0 root handle d5: htb"]
    plan.steps[0].do()
    plan.steps[0].undo()
    # the prio comes back as it was: hash table, pass filter (node 1, ahead of the link), link, nat filter
    assert [(m[0], m[1]["handle"]) for m in tc.ipr.sent] == [(tcb.RTM_DELTFILTER, 0), (tcb.RTM_NEWTFILTER, tcb.OWN_HTID), (tcb.RTM_NEWTFILTER, 0x1),
                                                             (tcb.RTM_NEWTFILTER, 0), (tcb.RTM_NEWTFILTER, state.leaves[0].handle)]
    # sharing the prio: one by one, the passes too
    state.foreign_at_prio = [{"kind": "u32"}]
    lines = [s.line for s in backend().plan(state, []).steps]
    assert "tc filter del dev eth0 parent d5: protocol ip prio 1 handle 800:0:1 u32" in lines


def test_classify_knows_the_pass_filters_from_their_bytes():
    tc = backend()
    state = tcb.TcState()

    def entry(msg, handle):
        decoded = tcb.decode_message(tcb.encode(msg, tcb.RTM_NEWTFILTER, 0))
        decoded["handle"] = handle
        decoded["u32"]["hash"] = handle & 0xFFFFF000  # as the kernel dumps a node
        return decoded

    assert tc._classify(state, entry(tcb.pass_message(2, tcb.OWN_QDISC, net("198.51.100.0/24"), 2), 0x80000002))
    assert state.passes == [tcb.Pass(net("198.51.100.0/24"), 0x80000002)] and state.exclusions == [net("198.51.100.0/24")]
    # behind the link (node 800 and up) a pass comes too late: not the module's
    assert not tc._classify(state, entry(tcb.pass_message(2, tcb.OWN_QDISC, net("172.16.0.1/32"), 0x801), 0x80000801))
    # a pass in the module's hash table, or another verdict, is not the module's either
    assert not tc._classify(state, entry(tcb.pass_message(2, tcb.OWN_QDISC, net("172.16.0.1/32"), 3), 0x0D50B003))
    assert not tc._classify(state, entry(tcb.pass_message(2, tcb.OWN_QDISC, net("172.16.0.1/32"), 3, control="drop"), 0x80000003))
    assert len(state.passes) == 1


# the nftables backend: a set per family, tested in the rewrite rule (ip daddr != @exclude4 ...)

def test_render_table_with_exclusions():
    text = nftb.render_table("eth0", [rule("172.16.0.8/29"), rule("2001:db8::/64", nat_to="2001:db8::1")],
                             [net("172.16.0.1/32"), net("198.51.100.0/24"), net("fd00:5::3/128")])
    assert "\tset exclude4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 172.16.0.1,\n\t\t\t198.51.100.0/24 }\n\t}" in text
    assert "\tset exclude6 {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = { fd00:5::3 }\n\t}" in text
    assert "ip daddr != @exclude4 ip saddr set ip saddr . meta l4proto . th sport map @snat4" in text
    assert "ip6 daddr != @exclude6 ip6 saddr set ip6 saddr . meta l4proto . th sport map @snat6" in text
    # one family only: the other rule stays unconditional and its set absent
    text = nftb.render_table("eth0", [rule("172.16.0.8/29")], [net("172.16.0.1/32")])
    assert "exclude6" not in text and "\t\tip6 saddr set ip6 saddr" in text
    lines = nftb.state_lines("eth0", [rule("172.16.0.8/29")], [net("172.16.0.1/32")])
    assert "set netdev netops_nat_eth0 exclude4 { type ipv4_addr; flags interval; }" in lines
    assert "element netdev netops_nat_eth0 exclude4 { 172.16.0.1 }" in lines
    assert "rule netdev netops_nat_eth0 egress ip daddr != @exclude4 ip saddr set ip saddr . meta l4proto . th sport map @snat4" in lines


def test_render_table_without_exclusions_is_what_earlier_versions_wrote():
    """No exclusion: no set, no condition; tables written before the option read back unchanged."""
    text = nftb.render_table("eth0", [rule("172.16.0.8/29")], [])
    assert text == nftb.render_table("eth0", [rule("172.16.0.8/29")])
    assert "exclude" not in text and "daddr" not in text


def _excluding_rule(handle, fam, name, excl):
    rule_obj = _mangle_rule(handle, fam, name)
    rule_obj["rule"]["expr"].insert(0, {"match": {"op": "!=", "left": {"payload": {"protocol": fam, "field": "daddr"}}, "right": "@%s" % excl}})
    return rule_obj


# what `nft -j list table` (nftables 1.0.6) printed for a table with exclude_destinations (IPv4 only)
LISTED_EXCL = {"nftables": LISTED["nftables"][:2] + [
    {"set": {"family": "netdev", "name": "exclude4", "table": "netops_nat_eth0", "type": "ipv4_addr", "handle": 8, "flags": ["interval"],
             "elem": ["172.16.0.1", {"prefix": {"addr": "198.51.100.0", "len": 24}}, {"range": ["203.0.113.1", "203.0.113.2"]}]}},
] + LISTED["nftables"][2:5] + [_excluding_rule(4, "ip", "snat4", "exclude4"), _mangle_rule(5, "ip6", "snat6")]}


def test_read_back_a_table_with_exclusions():
    nft = read_listed(LISTED_EXCL)
    state = nft.read()
    assert state.exists and state.ours and state.intact, state.problems
    assert state.exclusions == [net("172.16.0.1/32"), net("198.51.100.0/24"), net("203.0.113.1/32"), net("203.0.113.2/32")]
    assert nft.plan(state, state.rules, state.exclusions).steps == []
    assert len(nft.plan(state, state.rules, state.exclusions[:1]).steps) == 1
    assert len(nft.plan(state, state.rules).steps) == 1  # exclusions dropped: the table is rewritten without them
    # the table as earlier versions wrote it (no set) is intact with no exclusion
    assert read_listed(LISTED).read().exclusions == []


@pytest.mark.parametrize("change, problem", [
    (lambda objs: objs.__setitem__(-2, _mangle_rule(4, "ip", "snat4")), "chain rules differ from the module's"),  # the condition is gone
    (lambda objs: objs.pop(2), "chain rules differ from the module's"),  # the set is gone, the rule still tests it
    (lambda objs: objs[2]["set"].__setitem__("type", "ipv6_addr"), "set exclude4 has another type"),
    (lambda objs: objs[-2]["rule"]["expr"][0]["match"].__setitem__("op", "=="), "chain rules differ from the module's"),
])
def test_exclusion_drift_is_seen(change, problem):
    listed = json.loads(json.dumps(LISTED_EXCL))
    change(listed["nftables"])
    state = read_listed(listed).read()
    assert state.ours and not state.intact and problem in state.problems, state.problems


@pytest.mark.parametrize("device", ["eth0:1", "x" * 16, "a b", ""])
def test_run_refuses_a_device_name_the_kernel_refuses_before_opening_netlink(device):
    def no_netlink():
        raise AssertionError("netlink opened for an invalid device name")

    with pytest.raises(ValidationError, match="device %r is not a valid interface name" % device):
        nat_run.run({"device": device, "rules": []}, ipr_factory=no_netlink)
