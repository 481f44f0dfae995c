"""Real-kernel tests of tc_nat_filter's tc backend (htb + u32 + the tc nat action), in throwaway namespaces.

They need a kernel with act_nat. This lab's kernel has none, so here they skip; ``make vm`` runs them inside
a qemu VM booted with Debian's stock kernel, where act_nat loads on demand. Python is 10-17x slower in
there: few module runs, each checking much.
"""

import pytest

from test_tc_nat_filter import ACT_NAT, ACT_NAT_HOW, RULES, VIP, Pair, boot, nft_tables, persisted

VM_COMMAND = "make vm (tests/vm/run-in-vm -- .venv/bin/pytest -p no:cacheprovider -m needs_tc_nat tests/integration)"

pytestmark = [
    pytest.mark.needs_tc_nat,
    pytest.mark.skipif(not ACT_NAT, reason="kernel lacks act_nat (%s); run inside the VM: %s" % (ACT_NAT_HOW, VM_COMMAND)),
]

TC_RULES = RULES[:3]  # the IPv4 ones: 172.16.0.8/29 (collapsed) and 172.16.1.11, same bucket as 172.16.0.11

DATAGRAMS = [
    ("sock", "172.16.0.11", 53, "a"),
    ("raw", "172.16.0.12", 53, "b"),  # software checksum: arrives only if nat fixed it
    ("raw", "172.16.1.11", 53, "c"),  # bucket 0x0b, like 172.16.0.11, another target
    ("sock", "172.16.0.11", 54, "d"),  # another port: untouched
    ("sock", "172.16.1.11", 53, "t"),  # tcp rule below only; udp here
]


@pytest.fixture
def pair(netns, sh):
    return Pair(netns, sh)


def test_tc_rewrites_sources_idempotently_and_absent_restores(pair, run_module, sh):
    before = pair.exchange(DATAGRAMS)
    assert before == {"a": "172.16.0.11 53", "b": "172.16.0.12 53", "c": "172.16.1.11 53", "d": "172.16.0.11 54", "t": "172.16.1.11 53"}

    args = {"device": "up0", "backend": "tc", "rules": TC_RULES}
    checked = run_module(pair.up, "tc_nat_filter", args, check=True)
    assert checked["changed"] is True and checked["backend"] == "tc", checked
    assert "noqueue" in sh(pair.up, "tc qdisc show dev up0"), "check mode must not change the qdisc"

    first = run_module(pair.up, "tc_nat_filter", args)
    assert first["changed"] is True and first["backend"] == "tc", first
    assert first["diff"] == checked["diff"]
    assert first["commands"][0] == "tc qdisc add dev up0 root handle d5: htb default d5d5"
    shown = sh(pair.up, "tc filter show dev up0")
    assert "nat egress 172.16.0.11/32 192.168.99.10" in shown and "nat egress 172.16.1.11/32 192.168.99.20" in shown, shown
    assert "link d5:" in shown and "hash mask 000000ff at 12" in shown
    # 9 upstream addresses, 9 nat filters, in 9 buckets (8 for the /29, 172.16.1.11 shares 0x0b)
    assert shown.count(" nat egress ") == 9, shown

    after = pair.exchange(DATAGRAMS)
    assert after == {"a": "%s 53" % VIP, "b": "%s 53" % VIP, "c": "192.168.99.20 53", "d": "172.16.0.11 54", "t": "192.168.99.20 53"}

    again = run_module(pair.up, "tc_nat_filter", args)
    assert again["changed"] is False and again["commands"] == [], again
    assert again["diff"]["before"] == again["diff"]["after"] == first["diff"]["after"]

    # change one target, drop a protocol: only those filters change
    update = dict(args, rules=[TC_RULES[0], TC_RULES[1], {"src": "172.16.1.11", "protocol": "tcp", "sport": 53, "nat_to": "192.168.99.20"}])
    changed = run_module(pair.up, "tc_nat_filter", update)
    assert changed["changed"] is True
    assert [c.split(" u32")[0].split(" handle ")[0] for c in changed["commands"]] == [
        "tc filter del dev up0 parent d5: protocol ip prio 1", "tc filter add dev up0 parent d5: protocol ip prio 1"]
    assert pair.exchange(DATAGRAMS[-1:]) == {"t": "172.16.1.11 53"}

    gone = run_module(pair.up, "tc_nat_filter", {"device": "up0", "state": "absent"})
    assert gone["changed"] is True and gone["backend"] == "tc", gone
    assert "noqueue" in sh(pair.up, "tc qdisc show dev up0")
    assert sh(pair.up, "tc filter show dev up0") == ""
    assert pair.exchange(DATAGRAMS) == before


def test_tc_owns_only_what_it_created(pair, run_module, sh):
    # a foreign htb with a class and a filter of its own: attach, rewrite, leave it as it was
    sh(pair.up, "tc qdisc add dev up0 root handle 1: htb default 10 && tc class add dev up0 parent 1: classid 1:10 htb rate 100mbit"
                " && tc filter add dev up0 parent 1: protocol ip prio 5 u32 match ip dst 10.0.0.2/32 flowid 1:10")
    original = sh(pair.up, "tc qdisc show dev up0; tc class show dev up0; tc filter show dev up0")
    refused = run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "tc", "rules": TC_RULES[:1]})
    assert refused.get("failed") and "did not create" in refused["msg"], refused

    # the module's nftables table for the device goes away when tc takes over
    run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "nftables", "rules": TC_RULES[:1]})
    attached = run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "tc", "foreign_qdisc": "attach", "rules": TC_RULES[:1]})
    assert attached["changed"] is True and "nft delete table netdev netops_nat_up0" in attached["commands"], attached
    assert nft_tables(sh, pair.up) == []
    assert pair.exchange([("raw", "172.16.0.11", 53, "a")]) == {"a": "%s 53" % VIP}

    gone = run_module(pair.up, "tc_nat_filter", {"device": "up0", "state": "absent"})
    assert gone.get("changed") is True, gone
    assert sh(pair.up, "tc qdisc show dev up0; tc class show dev up0; tc filter show dev up0") == original

    # on its own qdisc, a filter someone else added keeps the qdisc alive at absent
    sh(pair.up, "tc qdisc del dev up0 root")
    run_module(pair.up, "tc_nat_filter", {"device": "up0", "backend": "auto", "rules": TC_RULES[:1]})
    sh(pair.up, "tc filter add dev up0 parent d5: protocol ip prio 7 u32 match ip dst 10.0.0.9/32 flowid d5:1")
    run_module(pair.up, "tc_nat_filter", {"device": "up0", "state": "absent"})
    shown = sh(pair.up, "tc filter show dev up0")
    assert "pref 7" in shown and "nat" not in shown and "pref 1 " not in shown, shown
    assert "htb d5:" in sh(pair.up, "tc qdisc show dev up0")


def test_tc_rules_persisted_come_back_after_a_reboot(pair, run_module, sh, tmp_path):
    args = persisted(tmp_path, device="up0", backend="tc", rules=TC_RULES)
    first = run_module(pair.up, "tc_nat_filter", args)
    assert first["changed"] is True and first["backend"] == "tc"
    unit = str(tmp_path / "units" / "netops-nat-up0.service")
    assert str(tmp_path / "etc" / "nat-up0.tc") in first["boot_files"]
    shown = sh(pair.up, "tc filter show dev up0")

    # the reboot: the device is back to the kernel's default qdisc; the unit's commands rebuild the same filters
    sh(pair.up, "tc qdisc del dev up0 root")
    assert boot(sh, pair.up, unit)[1] == "tc -batch %s" % (tmp_path / "etc" / "nat-up0.tc")
    assert sh(pair.up, "tc filter show dev up0") == shown
    assert pair.exchange(DATAGRAMS[:4]) == {"a": "%s 53" % VIP, "b": "%s 53" % VIP, "c": "192.168.99.20 53", "d": "172.16.0.11 54"}
    # a restart of the unit replaces the module's qdisc with the same; the module has nothing to do
    boot(sh, pair.up, unit)
    assert sh(pair.up, "tc filter show dev up0") == shown
    again = run_module(pair.up, "tc_nat_filter", args)
    assert again["changed"] is False, again["commands"]

    gone = run_module(pair.up, "tc_nat_filter", persisted(tmp_path, device="up0", state="absent"))
    assert gone["boot_files"] == [] and not (tmp_path / "units" / "netops-nat-up0.service").exists()
    assert "noqueue" in sh(pair.up, "tc qdisc show dev up0")


def test_persist_refuses_filters_on_a_foreign_qdisc(pair, run_module, sh, tmp_path):
    sh(pair.up, "tc qdisc add dev up0 root handle 1: prio")
    refused = run_module(pair.up, "tc_nat_filter", persisted(tmp_path, device="up0", backend="tc", rules=TC_RULES, foreign_qdisc="attach"))
    assert refused["failed"] and "persist cannot restore filters attached to the root qdisc 1:" in refused["msg"], refused
    assert sh(pair.up, "tc filter show dev up0") == "" and not (tmp_path / "etc").exists()
