"""Unit tests of tc_nat_filter's boot files: what they hold, how they are planned, written, undone and removed."""

import ipaddress
import json
import os

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import nft_backend as nftb
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import tc_backend as tcb
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import model as t
from ansible_collections.netops.ip_transparency.plugins.module_utils import _transaction as tx
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import persist as p
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ApplyError, ValidationError

VIP = "192.168.99.10"
FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "tc_nat", "tc_requests.json")


def rule(src, sport=53, nat_to=VIP, protocol="udp"):
    return t.Rule(ipaddress.ip_network(src), protocol, sport, ipaddress.ip_address(nat_to))


@pytest.fixture
def files(tmp_path):
    return p.Files("eth0", str(tmp_path / "etc" / "netops"), str(tmp_path / "systemd"))


def test_the_tc_batch_is_the_commands_whose_bytes_the_codec_tests_compare_with_iproute2():
    with open(FIXTURE) as handle:
        captured = [r["command"] for r in json.load(handle)["requests"]]
    wanted = [
        "tc qdisc add dev v0 root handle d5: htb default d5d5",
        "tc filter add dev v0 parent d5: protocol ip prio 1 handle d5: u32 divisor 256",
        "tc filter add dev v0 parent d5: protocol ip prio 1 u32 link d5: hashkey mask 0x000000ff at 12 match u32 0 0",
        "tc filter add dev v0 parent d5: protocol ip prio 1 u32 ht d5:b: match ip src 172.16.0.11/32 match ip protocol 17 0xff "
        "match ip sport 53 0xffff action nat egress 172.16.0.11/32 192.168.99.10 continue",
    ]
    assert set(wanted) <= set(captured)
    assert ["tc " + line for line in tcb.boot_batch("v0", [rule("172.16.0.11/32")])] == wanted


def test_the_tc_batch_has_one_leaf_per_address_in_bucket_order():
    lines = tcb.boot_batch("eth0", [rule("172.16.0.12/31"), rule("10.0.0.11/32", sport=8443, protocol="tcp")])
    leaves = [line for line in lines if " ht d5:" in line]
    assert [line.split("match ip src ")[1].split()[0] for line in leaves] == ["10.0.0.11/32", "172.16.0.12/32", "172.16.0.13/32"]
    assert "match ip protocol 6 0xff match ip sport 8443 0xffff" in leaves[0]


def test_nothing_to_persist_without_persist_or_without_rules(files):
    assert files.wanted({"tc": [], "nftables": [rule("172.16.0.11/32")]}, False) == {}
    assert files.wanted({"tc": [], "nftables": []}, True) == {}


def test_nftables_boot_files(files, tmp_path):
    wanted = files.wanted({"tc": [], "nftables": [rule("172.16.0.11/32")]}, True)
    nft_file = str(tmp_path / "etc" / "netops" / "nat-eth0.nft")
    unit = str(tmp_path / "systemd" / "netops-nat-eth0.service")
    link = str(tmp_path / "systemd" / "multi-user.target.wants" / "netops-nat-eth0.service")
    assert sorted(wanted) == sorted([nft_file, unit, link])
    assert wanted[nft_file].endswith(nftb.replace_script("eth0", [rule("172.16.0.11/32")]))
    assert wanted[nft_file].startswith("# Written by netops.ip_transparency.tc_nat_filter for eth0")
    assert "ExecStart=nft -f %s\n" % nft_file in wanted[unit]
    assert "tc " not in wanted[unit].split("[Service]")[1]
    assert "WantedBy=multi-user.target" in wanted[unit]
    assert isinstance(wanted[link], p.Link) and wanted[link] == unit


def test_tc_boot_files_delete_only_the_modules_qdisc_first(files, tmp_path):
    wanted = files.wanted({"tc": [rule("172.16.0.11/32")], "nftables": []}, True)
    unit = wanted[str(tmp_path / "systemd" / "netops-nat-eth0.service")]
    execs = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert execs == ["ExecStart=-tc qdisc del dev eth0 root handle d5:",
                     "ExecStart=tc -batch %s" % (tmp_path / "etc" / "netops" / "nat-eth0.tc")]


def test_unit_words_are_escaped_and_names_are_safe(tmp_path):
    odd = p.Files("br$x%1", str(tmp_path / "a%b"), str(tmp_path / "u"))
    unit = odd.wanted({"tc": [], "nftables": [rule("172.16.0.11/32")]}, True)[odd.unit]
    assert "ExecStart=nft -f %s" % str(tmp_path / "a%%b" / "nat-br_24x_251.nft") in unit
    assert os.path.basename(odd.unit) == "netops-nat-br_24x_251.service"
    assert p.unit_name("eth0.100") == "netops-nat-eth0_2e100.service"


@pytest.mark.parametrize("persist_dir, unit_dir", [("etc/netops", "/etc/systemd/system"), ("/etc/netops", ""), ("/etc/netops", "systemd")])
def test_paths_must_be_absolute(persist_dir, unit_dir):
    with pytest.raises(ValidationError, match="absolute path"):
        p.Files("eth0", persist_dir, unit_dir)


def test_plan_write_read_back_and_remove(files):
    wanted = files.wanted({"tc": [], "nftables": [rule("172.16.0.11/32")]}, True)
    steps = p.plan(files.read(), wanted, files.unit_dir)
    assert [s.line.split()[0] for s in steps] == ["write", "ln", "write"]
    tx.apply_steps(steps)
    assert files.read() == wanted
    assert oct(os.stat(files.restore["nftables"]).st_mode & 0o777) == "0o644"
    assert p.plan(files.read(), wanted, files.unit_dir) == []
    # the rules change: only the restore file is rewritten
    changed = files.wanted({"tc": [], "nftables": [rule("172.16.0.12/32")]}, True)
    assert [s.line for s in p.plan(files.read(), changed, files.unit_dir)] == ["write %s" % files.restore["nftables"]]
    # no rule left: everything goes
    tx.apply_steps(p.plan(files.read(), {}, files.unit_dir))
    assert files.read() == {}
    assert not [name for name in os.listdir(os.path.dirname(files.unit)) if name.startswith(".netops-")]


def test_a_failed_step_puts_the_previous_files_back(files):
    first = files.wanted({"tc": [], "nftables": [rule("172.16.0.11/32")]}, True)
    tx.apply_steps(p.plan({}, first, files.unit_dir))
    second = files.wanted({"tc": [rule("172.16.0.12/32")], "nftables": []}, True)
    steps = p.plan(files.read(), second, files.unit_dir)

    def boom():
        raise OSError("disk full")

    steps.append(tx.Step("fail", boom))
    with pytest.raises(ApplyError, match="3 earlier change.s. rolled back"):
        tx.apply_steps(steps)
    assert files.read() == first


def test_lines_for_the_diff(files):
    wanted = files.wanted({"tc": [], "nftables": [rule("172.16.0.11/32")]}, True)
    lines = p.lines(wanted)
    assert "file %s" % files.restore["nftables"] in lines
    assert "link %s -> %s" % (files.link, files.unit) in lines
    assert "    ExecStart=nft -f %s" % files.restore["nftables"] in lines


def test_the_tc_batch_restores_the_exclusions_ahead_of_the_link():
    lines = tcb.boot_batch("eth0", [rule("172.16.0.11/32")], [ipaddress.ip_network("172.16.0.1/32"), ipaddress.ip_network("198.51.100.0/24")])
    assert lines[:5] == [
        "qdisc add dev eth0 root handle d5: htb default d5d5",
        "filter add dev eth0 parent d5: protocol ip prio 1 handle d5: u32 divisor 256",
        "filter add dev eth0 parent d5: protocol ip prio 1 handle ::1 u32 match ip dst 172.16.0.1/32 action gact pass",
        "filter add dev eth0 parent d5: protocol ip prio 1 handle ::2 u32 match ip dst 198.51.100.0/24 action gact pass",
        "filter add dev eth0 parent d5: protocol ip prio 1 u32 link d5: hashkey mask 0x000000ff at 12 match u32 0 0",
    ]
    assert tcb.boot_batch("eth0", [rule("172.16.0.11/32")], []) == tcb.boot_batch("eth0", [rule("172.16.0.11/32")])


def test_boot_files_hold_the_exclusions(files):
    excl = [ipaddress.ip_network("172.16.0.1/32")]
    wanted = files.wanted({"tc": [rule("172.16.0.11/32")], "nftables": [rule("172.16.0.12/32")]}, True, {"tc": excl, "nftables": excl})
    assert "handle ::1 u32 match ip dst 172.16.0.1/32 action gact pass\n" in wanted[files.restore["tc"]]
    assert wanted[files.restore["nftables"]].endswith(nftb.replace_script("eth0", [rule("172.16.0.12/32")], excl))
    assert "ip daddr != @exclude4" in wanted[files.restore["nftables"]]
    # only the exclusions change: only the restore file is rewritten
    tx.apply_steps(p.plan(files.read(), wanted, files.unit_dir))
    fewer = files.wanted({"tc": [rule("172.16.0.11/32")], "nftables": [rule("172.16.0.12/32")]}, True, {"tc": excl, "nftables": []})
    assert [s.line for s in p.plan(files.read(), fewer, files.unit_dir)] == ["write %s" % files.restore["nftables"]]
