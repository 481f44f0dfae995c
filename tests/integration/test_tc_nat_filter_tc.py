"""Real-kernel tests of tc_nat_filter's tc backend (htb + u32 + the tc nat action), in throwaway namespaces.

They need a kernel with act_nat. This lab's kernel has none, so here they skip; ``make vm`` runs them inside
a qemu VM booted with Debian's stock kernel, where act_nat loads on demand. Python is 10-17x slower in
there: few module runs, each checking much.
"""

import pytest

from test_tc_nat_filter import (
    ACT_NAT,
    ACT_NAT_HOW,
    EXCLUDING,
    EXCLUSION_DATAGRAMS,
    PROBE,
    RULES,
    UNREWRITTEN,
    VIP,
    Pair,
    add_probe_addresses,
    boot,
    nft_tables,
    persisted,
)

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


def test_tc_exclude_destinations_keep_the_source_of_replies_to_them_and_come_back_at_boot(pair, run_module, sh, tmp_path):
    add_probe_addresses(pair, sh)
    assert pair.exchange(EXCLUSION_DATAGRAMS) == UNREWRITTEN

    args = persisted(tmp_path, device="up0", backend="tc", rules=TC_RULES, exclude_destinations=[PROBE, "198.51.100.0/24"])
    checked = run_module(pair.up, "tc_nat_filter", args, check=True)
    assert checked["changed"] is True and "noqueue" in sh(pair.up, "tc qdisc show dev up0"), checked

    first = run_module(pair.up, "tc_nat_filter", args)
    assert first["changed"] is True and first["backend"] == "tc", first
    assert first["diff"] == checked["diff"]
    assert first["exclude_destinations"] == ["172.16.0.1/32", "198.51.100.0/24"]
    # the pass filters go in before the link to the nat filters' hash table
    assert first["commands"][2:5] == [
        "tc filter add dev up0 parent d5: protocol ip prio 1 handle ::1 u32 match ip dst 172.16.0.1/32 action gact pass",
        "tc filter add dev up0 parent d5: protocol ip prio 1 handle ::2 u32 match ip dst 198.51.100.0/24 action gact pass",
        "tc filter add dev up0 parent d5: protocol ip prio 1 u32 link d5: hashkey mask 0x000000ff at 12 match u32 0 0",
    ], first["commands"]
    shown = sh(pair.up, "tc filter show dev up0")
    print(shown)
    assert "fh 800::1 order 1 key ht 800 bkt 0 " in shown and "match ac100001/ffffffff at 16" in shown, shown
    assert "fh 800::2 order 2 key ht 800 bkt 0 " in shown and "match c6336400/ffffff00 at 16" in shown, shown
    assert shown.index("fh 800::1 ") < shown.index("fh 800::2 ") < shown.index("fh 800::800 "), "u32 tries the passes first"
    assert shown.count("gact action pass") == 2 and shown.count(" nat egress ") == 9, shown

    assert pair.exchange(EXCLUSION_DATAGRAMS) == EXCLUDING

    again = run_module(pair.up, "tc_nat_filter", args)
    assert again["changed"] is False and again["commands"] == [], again
    assert again["diff"]["before"] == again["diff"]["after"] == first["diff"]["after"]

    # the reboot: the unit's tc batch rebuilds the same filters, passes included
    sh(pair.up, "tc qdisc del dev up0 root")
    assert pair.exchange(EXCLUSION_DATAGRAMS) == UNREWRITTEN
    boot(sh, pair.up, str(tmp_path / "units" / "netops-nat-up0.service"))
    assert sh(pair.up, "tc filter show dev up0") == shown
    assert pair.exchange(EXCLUSION_DATAGRAMS) == EXCLUDING

    # one exclusion replaced: one pass filter removed, one added at a node id the old ones did not have
    update = dict(args, exclude_destinations=[PROBE, "203.0.113.0/24"])
    changed = run_module(pair.up, "tc_nat_filter", update)
    assert changed["commands"][:2] == [
        "tc filter del dev up0 parent d5: protocol ip prio 1 handle 800:0:2 u32",
        "tc filter add dev up0 parent d5: protocol ip prio 1 handle ::3 u32 match ip dst 203.0.113.0/24 action gact pass",
    ] and changed["added"] == changed["removed"] == [], changed
    # the boot file follows (it numbers the pass filters from 1 again: same prefixes, same order ahead of the link)
    batch = (tmp_path / "etc" / "nat-up0.tc").read_text()
    assert "u32 match ip dst 203.0.113.0/24 action gact pass" in batch and "198.51.100.0/24" not in batch, batch
    assert pair.exchange(EXCLUSION_DATAGRAMS[:1]) == {"probe": "172.16.0.11 53"}

    gone = run_module(pair.up, "tc_nat_filter", persisted(tmp_path, device="up0", state="absent"))
    assert gone["changed"] is True and gone["exclude_destinations"] == [] and gone["boot_files"] == [], gone
    assert "noqueue" in sh(pair.up, "tc qdisc show dev up0") and sh(pair.up, "tc filter show dev up0") == ""
    assert pair.exchange(EXCLUSION_DATAGRAMS) == UNREWRITTEN
