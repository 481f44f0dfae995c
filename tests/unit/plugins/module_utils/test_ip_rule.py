"""Unit tests of module_utils/ip_rule: normalisation, validation, identity, plan, rendering, rollback."""

import ipaddress
import socket

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils import _ip_rule as ip_rule
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ApplyError, KernelFeatureError, ValidationError

from .netlink_fakes import FakeIPRoute, rule_msg

DEFAULTS = [rule_msg(None, 255), rule_msg(32766, 254), rule_msg(32767, 253)]


def want(**params):
    return ip_rule.normalise(params)


# --- normalisation -------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [
    ({"fwmark": "0x1", "table": "main"}, {"fwmark": 1, "table": 254}),
    ({"fwmark": 1}, {"fwmark": 1, "fwmask": 0xFFFFFFFF, "table": "254"}),
    ({"from": "172.16.0.11"}, {"from": "172.16.0.11/32"}),
    ({"from": "all", "to": "10.0.0.0/8"}, {"to": "10.0.0.0/8"}),
    ({"from": "2001:db8::/32"}, {"from": "2001:db8::/32", "family": "ipv6"}),
    ({"table": "local"}, {"table": 255}),
    ({"from": "0.0.0.0/0", "table": 100}, {"from": "all", "table": 100}),
    ({"to": "0.0.0.0/0", "fwmark": 1}, {"fwmark": 1}),
    ({"from": "::/0", "to": "::/0"}, {"family": "ipv6"}),
    ({"from": "::/0", "to": "2001:db8::/32"}, {"to": "2001:db8::/32"}),
])
def test_equivalent_spellings_normalise_alike(a, b):
    assert want(**a) == want(**b)


def test_defaults():
    rule = want(fwmark=1, table=100)
    assert (rule.family, rule.action, rule.fwmask, rule.priority) == (4, "lookup", 0xFFFFFFFF, None)
    assert want(**{"from": "2001:db8::1"}).family == 6
    assert want(action="blackhole").table is None


@pytest.mark.parametrize("params, message", [
    ({"from": "10.0.0.0/8", "to": "2001:db8::/32"}, "mix IPv4 and IPv6"),
    ({"from": "0.0.0.0/0", "to": "::/0"}, "mix IPv4 and IPv6"),
    ({"family": "ipv4", "from": "::/0"}, "does not match"),
    ({"family": "ipv6", "from": "10.0.0.1"}, "does not match"),
    ({"fwmask": "0xff"}, "fwmask needs fwmark"),
    ({"fwmark": "0x100", "fwmask": "0xff"}, "bits outside fwmask"),
    ({"fwmark": "zz"}, "not a number"),
    ({"fwmark": 2 ** 32}, "out of range"),
    ({"from": "172.16.0.1/24"}, "host bits set"),
    ({"to": "nonsense"}, "not an IPv4 or IPv6"),
    ({"table": 0}, "not a routing table"),
    ({"table": 2 ** 32}, "out of range"),
    ({"table": "nosuchtable"}, "neither a number"),
    ({"priority": -1}, "out of range"),
    ({"priority": 2 ** 32}, "out of range"),
    ({"action": "blackhole", "table": 100}, "only used with action=lookup"),
    ({"iif": "a/b"}, "not a valid interface name"),
    ({"oif": "x" * 16}, "not a valid interface name"),
])
def test_validation_errors(params, message):
    with pytest.raises(ValidationError, match=message):
        want(**params)


def test_rt_tables_names(monkeypatch):
    from ansible_collections.netops.ip_transparency.plugins.module_utils import _netlink as netlink
    monkeypatch.setattr(netlink, "read_rt_tables", lambda: {"tproxy": 100})
    assert want(table="tproxy").table == 100


def test_rt_tables_file_parsing(tmp_path):
    from ansible_collections.netops.ip_transparency.plugins.module_utils import _netlink as netlink
    path = tmp_path / "rt_tables"
    path.write_text("# comment\n255\tlocal\n100 tproxy # the proxy's table\nbroken\n0x10 hexa\n")
    names = netlink.read_rt_tables(files=[str(path)], dirs=[])
    assert names == {"local": 255, "tproxy": 100, "hexa": 16}


# --- kernel messages -------------------------------------------------------------------------

def test_from_netlink_reads_selectors_and_big_tables():
    msg = rule_msg(101, 1000, src="10.0.0.0", src_len=8, dst="10.1.0.0", dst_len=16,
                   FRA_IIFNAME="eth0", FRA_OIFNAME="lo", FRA_FWMARK=1, FRA_FWMASK=0xFF)
    rule = ip_rule.from_netlink(msg)
    assert rule.table == 1000 and rule.priority == 101
    assert rule.src == ipaddress.ip_network("10.0.0.0/8") and rule.dst == ipaddress.ip_network("10.1.0.0/16")
    assert (rule.iif, rule.oif, rule.fwmark, rule.fwmask, rule.foreign) == ("eth0", "lo", 1, 0xFF, ())
    assert rule.render() == "101: from 10.0.0.0/8 to 10.1.0.0/16 fwmark 0x1/0xff iif eth0 oif lo lookup 1000"


def test_local_rule_without_priority_attribute_is_priority_0():
    rule = ip_rule.from_netlink(DEFAULTS[0])
    assert rule.priority == 0 and rule.is_kernel_default()
    assert rule.render() == "0: from all lookup local"


@pytest.mark.parametrize("msg", [
    rule_msg(100, 100, tos=0x10, FRA_FWMARK=1, FRA_FWMASK=0xFFFFFFFF),
    rule_msg(100, 100, flags=ip_rule.FIB_RULE_INVERT, FRA_FWMARK=1, FRA_FWMASK=0xFFFFFFFF),
    rule_msg(100, 100, FRA_FWMARK=1, FRA_FWMASK=0xFFFFFFFF, FRA_UID_RANGE="1000:2000"),
    rule_msg(100, 100, FRA_FWMARK=1, FRA_FWMASK=0xFFFFFFFF, FRA_SUPPRESS_PREFIXLEN=0),
])
def test_rules_with_unmodelled_selectors_never_match(msg):
    rule = ip_rule.from_netlink(msg)
    assert rule.foreign
    assert not want(priority=100, fwmark=1, table=100).matches(rule)


def test_blackhole_rule():
    rule = ip_rule.from_netlink(rule_msg(103, 0, action=6))
    assert rule.action == "blackhole" and rule.table is None
    assert rule.render() == "103: from all blackhole"
    assert want(priority=103, action="blackhole").matches(rule)


# --- plan ----------------------------------------------------------------------------------

def existing(*extra):
    return [ip_rule.from_netlink(m) for m in DEFAULTS[:1] + list(extra) + DEFAULTS[1:]]


def test_plan_adds_missing_rule_and_renders_diff():
    plan = ip_rule.plan(want(priority=100, fwmark=1, table=100), existing(), "present")
    assert plan.changed and len(plan.to_add) == 1
    assert plan.diff()["after"] == (
        "0: from all lookup local\n100: from all fwmark 0x1 lookup 100\n32766: from all lookup main\n32767: from all lookup default\n"
    )


def test_plan_present_is_idempotent_with_other_spellings():
    rules = existing(rule_msg(100, 100, FRA_FWMARK=1, FRA_FWMASK=0xFFFFFFFF))
    assert not ip_rule.plan(want(priority=100, fwmark="0x1", table="100"), rules, "present").changed
    # without a priority any priority matches
    assert not ip_rule.plan(want(fwmark=1, table=100), rules, "present").changed
    # another priority is another rule
    assert ip_rule.plan(want(priority=200, fwmark=1, table=100), rules, "present").changed


def test_plan_without_priority_shows_the_default_priority():
    plan = ip_rule.plan(want(fwmark=1, table=100), existing(), "present")
    assert "32000: from all fwmark 0x1 lookup 100" in plan.after


def test_plan_absent_removes_only_exact_matches():
    rules = existing(
        rule_msg(100, 100, FRA_FWMARK=1, FRA_FWMASK=0xFFFFFFFF),
        rule_msg(100, 100, FRA_FWMARK=1, FRA_FWMASK=0xFFFFFFFF, FRA_IIFNAME="eth0"),
        rule_msg(101, 100, FRA_FWMARK=1, FRA_FWMASK=0xFF),
    )
    plan = ip_rule.plan(want(priority=100, fwmark=1, table=100, state="absent"), rules, "absent")
    assert [r.render() for r in plan.to_remove] == ["100: from all fwmark 0x1 lookup 100"]


def test_plan_absent_never_touches_kernel_defaults_unless_named_by_priority():
    rules = existing()
    assert not ip_rule.plan(want(table="main"), rules, "absent").changed
    assert not ip_rule.plan(want(table="local"), rules, "absent").changed
    plan = ip_rule.plan(want(priority=32767, table="default"), rules, "absent")
    assert [r.priority for r in plan.to_remove] == [32767]


def test_plan_absent_of_missing_rule_is_unchanged():
    assert not ip_rule.plan(want(priority=100, fwmark=1, table=100), existing(), "absent").changed


# --- netlink arguments, ensure and rollback ----------------------------------------------------

def test_netlink_args():
    args = want(priority=5, fwmark=1, table=1000, iif="eth0", **{"from": "10.0.0.0/8"}).netlink_args()
    assert args == {"family": socket.AF_INET, "action": 1, "table": 1000, "priority": 5, "src": "10.0.0.0", "src_len": 8,
                    "fwmark": 1, "fwmask": 0xFFFFFFFF, "iifname": "eth0"}
    assert want(fwmark=1, table=100).netlink_args()["priority"] == ip_rule.DEFAULT_PRIORITY
    assert "table" not in want(action="prohibit").netlink_args()


def test_ensure_check_mode_touches_nothing():
    ipr = FakeIPRoute(rules=DEFAULTS)
    result = ip_rule.ensure(ipr, {"priority": 100, "fwmark": 1, "table": 100}, check_mode=True)
    assert result["changed"] and result["added"][0]["fwmark"] == 1
    assert ipr.calls == []


def test_ensure_refuses_unknown_devices_before_any_change():
    ipr = FakeIPRoute(rules=DEFAULTS)
    with pytest.raises(ValidationError, match="unknown interface 'eth9'"):
        ip_rule.ensure(ipr, {"priority": 100, "iif": "eth9", "table": 100})
    assert ipr.calls == []


def test_removal_failure_rolls_back_earlier_removals():
    dup = rule_msg(100, 100, FRA_FWMARK=1, FRA_FWMASK=0xFFFFFFFF)
    ipr = FakeIPRoute(rules=DEFAULTS + [dup, dup], fail_on=(("rule", "del"), 2))
    with pytest.raises(ApplyError) as info:
        ip_rule.ensure(ipr, {"priority": 100, "fwmark": 1, "table": 100, "state": "absent"})
    assert info.value.rolled_back
    assert [c[1] for c in ipr.calls] == ["del", "add"]


def test_zero_length_selector_matches_the_kernel_rule_dumped_without_it():
    # `ip rule add from 0.0.0.0/0 lookup 100` is dumped with src_len 0 and no FRA_SRC
    kernel = [ip_rule.from_netlink(m) for m in DEFAULTS + [rule_msg(300, 100)]]
    assert not ip_rule.plan(want(**{"from": "0.0.0.0/0", "priority": 300, "table": 100}), kernel, "present").changed
    gone = ip_rule.plan(want(**{"to": "0.0.0.0/0", "priority": 300, "table": 100}), kernel, "absent")
    assert [r.render() for r in gone.to_remove] == ["300: from all lookup 100"]


# --- ipproto / sport / dport (Linux 4.17+) ---------------------------------------------------------

@pytest.fixture
def new_kernel(monkeypatch):
    monkeypatch.setattr(ip_rule, "kernel_release", lambda: "6.1.0-28-amd64")


@pytest.mark.parametrize("a, b", [
    ({"ipproto": "tcp", "sport": 80, "table": 101}, {"ipproto": 6, "sport": "80", "table": "101"}),
    ({"ipproto": "TCP", "sport": "80-80"}, {"ipproto": "6", "sport": [80, 80]}),
    ({"ipproto": "udp", "dport": "1000-2000"}, {"ipproto": 17, "dport": " 1000 - 2000 "}),
    ({"ipproto": "ipv6-icmp", "family": "ipv6"}, {"ipproto": "icmpv6", "family": "ipv6"}),
    ({"ipproto": "sctp", "sport": 1}, {"ipproto": 132, "sport": "1"}),
    ({"ipproto": "dccp", "dport": 65534}, {"ipproto": 33, "dport": "65534-65534"}),
])
def test_l4_selectors_normalise_alike(a, b):
    assert want(**a) == want(**b)


def test_l4_selectors_normalised_values():
    rule = want(ipproto="tcp", sport=80, dport="1000-2000", table=101, priority=1000)
    assert (rule.ipproto, rule.sport, rule.dport) == (6, (80, 80), (1000, 2000))
    assert rule.render() == "1000: from all ipproto tcp sport 80 dport 1000-2000 lookup 101"
    assert want(ipproto=253).render() == "auto: from all ipproto 253 lookup main"
    params = rule.as_params()
    assert (params["ipproto"], params["sport"], params["dport"]) == ("tcp", 80, "1000-2000")
    assert want(**params) == rule  # a returned rule can be fed back
    assert want(ipproto=253).as_params()["ipproto"] == 253


@pytest.mark.parametrize("params, message", [
    ({"ipproto": "nosuchproto"}, "neither a protocol name"),
    ({"ipproto": 256}, "out of range"),
    ({"ipproto": -1}, "out of range"),
    ({"ipproto": True}, "neither a protocol name"),
    ({"ipproto": "tcp", "sport": 0}, "out of range"),
    ({"ipproto": "tcp", "sport": 65536}, "out of range"),
    ({"ipproto": "tcp", "sport": 65535}, "refuses port 65535"),
    ({"ipproto": "udp", "dport": "1024-65535"}, "refuses port 65535"),
    ({"ipproto": "tcp", "sport": "2000-1000"}, "start 2000 is above its end 1000"),
    ({"ipproto": "tcp", "dport": "80-"}, "neither a port"),
    ({"ipproto": "tcp", "dport": "http"}, "neither a port"),
    ({"sport": 80}, "sport needs ipproto tcp, udp, sctp or dccp.*ipproto is not set"),
    ({"dport": 53}, "dport needs ipproto tcp, udp, sctp or dccp"),
    ({"ipproto": "icmp", "dport": 53}, "dport needs ipproto.*ipproto is icmp"),
])
def test_l4_selector_validation_errors(params, message):
    with pytest.raises(ValidationError, match=message):
        want(**params)


def test_from_netlink_reads_l4_selectors_as_pyroute2_decodes_them():
    # pyroute2 0.7 and 0.9 both decode fib_rule_port_range as "start:end" and FRA_IP_PROTO as an int
    msg = rule_msg(1000, 101, FRA_IP_PROTO=6, FRA_SPORT_RANGE="80:80", FRA_DPORT_RANGE="1000:2000")
    rule = ip_rule.from_netlink(msg)
    assert not rule.foreign
    assert (rule.ipproto, rule.sport, rule.dport) == (6, (80, 80), (1000, 2000))
    assert rule.render() == "1000: from all ipproto tcp sport 80 dport 1000-2000 lookup 101"
    assert want(priority=1000, ipproto="tcp", sport=80, dport="1000-2000", table=101).matches(rule)


def test_l4_selectors_are_part_of_the_identity():
    plain = ip_rule.from_netlink(rule_msg(1000, 101))
    tcp80 = ip_rule.from_netlink(rule_msg(1000, 101, FRA_IP_PROTO=6, FRA_SPORT_RANGE="80:80"))
    assert not want(priority=1000, table=101).matches(tcp80)
    assert not want(priority=1000, ipproto="tcp", sport=80, table=101).matches(plain)
    assert not want(priority=1000, ipproto="tcp", sport=443, table=101).matches(tcp80)
    assert not want(priority=1000, ipproto="udp", sport=80, table=101).matches(tcp80)
    assert not want(priority=1000, ipproto="tcp", table=101).matches(tcp80)
    rules = existing(rule_msg(1000, 101), rule_msg(1000, 101, FRA_IP_PROTO=6, FRA_SPORT_RANGE="80:80"))
    gone = ip_rule.plan(want(priority=1000, table=101, state="absent"), rules, "absent")
    assert [r.render() for r in gone.to_remove] == ["1000: from all lookup 101"]
    gone = ip_rule.plan(want(priority=1000, ipproto="tcp", sport=80, table=101), rules, "absent")
    assert [r.render() for r in gone.to_remove] == ["1000: from all ipproto tcp sport 80 lookup 101"]


def test_kernel_default_rule_with_l4_selector_is_not_a_default():
    assert not ip_rule.from_netlink(rule_msg(32766, 254, FRA_IP_PROTO=6)).is_kernel_default()


def test_l4_netlink_args():
    args = want(family="ipv6", priority=1000, ipproto="udp", sport=53, dport="1024-65534", table=101).netlink_args()
    assert args == {"family": socket.AF_INET6, "action": 1, "table": 101, "priority": 1000,
                    "ip_proto": 17, "sport_range": "53:53", "dport_range": "1024:65534"}


def test_plan_and_diff_with_l4_selectors(new_kernel):
    ipr = FakeIPRoute(rules=DEFAULTS)
    result = ip_rule.ensure(ipr, {"priority": 1000, "ipproto": "tcp", "sport": 80, "table": 101}, check_mode=True)
    assert result["changed"] and ipr.calls == []
    assert "1000: from all ipproto tcp sport 80 lookup 101" in result["diff"]["after"]
    assert "sport" not in result["diff"]["before"]
    assert result["added"][0]["ipproto"] == "tcp" and result["added"][0]["sport"] == 80
    ipr = FakeIPRoute(rules=DEFAULTS + [rule_msg(1000, 101, FRA_IP_PROTO=6, FRA_SPORT_RANGE="80:80")])
    assert not ip_rule.ensure(ipr, {"priority": 1000, "ipproto": "6", "sport": "80", "table": "101"})["changed"]
    assert ipr.calls == []


@pytest.mark.parametrize("release", ["4.16.18", "4.9.0-19-amd64", "3.10.0-1160.el7.x86_64", "garbage"])
def test_old_kernel_refuses_l4_selectors_before_any_change(monkeypatch, release):
    monkeypatch.setattr(ip_rule, "kernel_release", lambda: release)
    ipr = FakeIPRoute(rules=DEFAULTS)
    with pytest.raises(KernelFeatureError) as info:
        ip_rule.ensure(ipr, {"priority": 1000, "ipproto": "tcp", "sport": 80, "table": 101})
    assert release in str(info.value) and "4.17" in str(info.value) and "sport" in str(info.value)
    assert ipr.calls == []
    # rules without those selectors still work there
    assert ip_rule.ensure(ipr, {"priority": 100, "fwmark": 1, "table": 100})["changed"]


@pytest.mark.parametrize("release", ["4.17.0", "4.19.0-27-amd64", "5.10.0", "6.18.44-fc"])
def test_new_enough_kernels_pass(release):
    ip_rule.check_kernel_selectors(release)


def test_kernel_rejecting_the_attributes_is_named_clearly(new_kernel):
    from .netlink_fakes import NetlinkError

    class Rejecting(FakeIPRoute):
        def rule(self, command, **kwargs):
            if "ip_proto" in kwargs:
                raise NetlinkError(22, "Invalid argument")
            FakeIPRoute.rule(self, command, **kwargs)

    ipr = Rejecting(rules=DEFAULTS)
    with pytest.raises(KernelFeatureError) as info:
        ip_rule.ensure(ipr, {"priority": 1000, "ipproto": "tcp", "sport": 80, "table": 101})
    assert "6.1.0-28-amd64" in str(info.value) and "4.17" in str(info.value)


class _Slot(list):
    """pyroute2's raw form of an attribute it has no name for (an ``nla_slot`` named UNKNOWN)."""

    def __init__(self, kind, payload):
        class Nla(dict):
            pass
        super(_Slot, self).__init__(["UNKNOWN", {"header": {"type": kind}}])
        self.name = "UNKNOWN"
        self.nla = Nla(header={"length": 4 + len(payload), "type": kind})
        self.nla.data = b"\x00" * 8 + bytes(bytearray([4 + len(payload), 0, kind, 0])) + payload
        self.nla.offset = 8


def test_port_masks_of_linux_6_15_are_neutral_for_a_single_port():
    # Linux 6.15+ dumps FRA_SPORT_MASK/FRA_DPORT_MASK (28/29) = 0xffff for a single port; pyroute2 calls them UNKNOWN
    msg = rule_msg(7, 101, FRA_IP_PROTO=6, FRA_SPORT_RANGE="80:80")
    msg["attrs"].append(_Slot(28, b"\xff\xff"))
    rule = ip_rule.from_netlink(msg)
    assert rule.foreign == () and want(priority=7, ipproto="tcp", sport=80, table=101).matches(rule)
    masked = rule_msg(7, 101, FRA_IP_PROTO=6, FRA_SPORT_RANGE="80:80")
    masked["attrs"].append(_Slot(28, b"\xf0\xff"))
    assert ip_rule.from_netlink(masked).foreign
