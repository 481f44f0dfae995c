"""Unit tests of module_utils/rp_filter: values, effective planning, sysctl.d file editing, absent, rollback."""

import os

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils import _rp_filter as rp
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ApplyError, ValidationError


@pytest.fixture
def proc(tmp_path):
    """A fake /proc/sys/net/ipv4/conf: all=2 default=0 lo=0 eth0=0 eth1=1 eth0.100=0."""
    root = tmp_path / "conf"

    def make(**values):
        for name, value in values.items():
            (root / name.replace("_", ".")).mkdir(parents=True, exist_ok=True)
            (root / name.replace("_", ".") / "rp_filter").write_text("%d\n" % value)
        return rp.Sysctl(str(root))

    return make


@pytest.fixture
def sysctl(proc):
    return proc(all=2, default=0, lo=0, eth0=0, eth1=1, eth0_100=0)


def values(sysctl):
    return sysctl.read_all()


def run(sysctl, tmp_path, check=False, **params):
    params.setdefault("sysctl_file", str(tmp_path / "sysctl.d" / "60-test.conf"))
    return rp.ensure(params, check_mode=check, sysctl=sysctl)


@pytest.mark.parametrize("given, number", [("off", 0), ("strict", 1), ("loose", 2), ("0", 0), (1, 1), ("2", 2), (False, 0), ("LOOSE", 2)])
def test_parse_value(given, number):
    assert rp.parse_value(given) == number


@pytest.mark.parametrize("given", ["on", 3, "", True])
def test_parse_value_refuses(given):
    with pytest.raises(ValidationError, match="off, strict or loose"):
        rp.parse_value(given)


def test_keys_for_dotted_names_use_slashes():
    assert rp.sysctl_key("eth0") == "net.ipv4.conf.eth0.rp_filter"
    assert rp.sysctl_key("eth0.100") == "net/ipv4/conf/eth0.100/rp_filter"
    for name in ("eth0", "eth0.100", "all", "default"):
        assert rp.iface_of_key(rp.sysctl_key(name)) == name
    assert rp.iface_of_key("net.ipv4.ip_forward") is None


# --- planning --------------------------------------------------------------------------------

CURRENT = {"all": 2, "default": 0, "lo": 0, "eth0": 0, "eth1": 1, "eth2": 2}


def test_effective_lowers_all_and_raises_those_relying_on_it():
    target = rp.compute_targets({"eth1": 0}, CURRENT)
    assert target == {"all": 0, "default": 2, "lo": 2, "eth0": 2, "eth1": 0, "eth2": 2}
    for iface in CURRENT:
        if iface not in ("eth1", "all"):
            assert max(target["all"], target[iface]) == max(CURRENT["all"], CURRENT[iface])


def test_effective_lowers_all_only_as_far_as_needed():
    target = rp.compute_targets({"eth1": 1}, CURRENT)
    assert target["all"] == 1 and target["eth0"] == 2 and target["eth1"] == 1


def test_without_effective_only_the_listed_keys_change():
    assert rp.compute_targets({"eth1": 0}, CURRENT, want_effective=False) == dict(CURRENT, eth1=0)


def test_all_higher_than_listed_interfaces_is_refused_with_effective():
    with pytest.raises(ValidationError, match="all=loose would override eth1=off"):
        rp.compute_targets({"all": 2, "eth1": 0}, CURRENT)


def test_lowering_all_explicitly_keeps_the_others_effective():
    target = rp.compute_targets({"all": 0}, CURRENT)
    assert target["all"] == 0 and target["eth0"] == 2 and target["default"] == 2


def test_raises_are_written_before_lowers():
    current = {"all": 2, "eth0": 0, "eth1": 0}
    assert rp.order_writes({"all": 0, "eth0": 2, "eth1": 0}, current) == ["eth0", "all"]


# --- ensure against the fake /proc -----------------------------------------------------------

def test_present_persists_records_and_is_idempotent(sysctl, tmp_path):
    result = run(sysctl, tmp_path, interfaces=["eth0.100"], value="off")
    assert result["changed"]
    assert values(sysctl) == {"all": 0, "default": 2, "lo": 2, "eth0": 2, "eth1": 2, "eth0.100": 0}
    assert result["values"]["eth0.100"] == {"configured": "off", "effective": "off"}
    assert result["values"]["eth1"] == {"configured": "loose", "effective": "loose"}
    assert result["changed_keys"][-1] == "net.ipv4.conf.all.rp_filter"
    text = (tmp_path / "sysctl.d" / "60-test.conf").read_text()
    assert "net/ipv4/conf/eth0.100/rp_filter = 0\n" in text
    assert "net.ipv4.conf.all.rp_filter = 0\n" in text
    assert "# netops-original: net.ipv4.conf.all.rp_filter = 2 for eth0.100\n" in text
    assert "# netops-original: net.ipv4.conf.eth0.rp_filter = 0 for @all\n" in text
    assert text.index("net.ipv4.conf.all.rp_filter = 0") < text.index("net.ipv4.conf.eth0.rp_filter = 2")
    again = run(sysctl, tmp_path, interfaces=["eth0.100"], value="0")
    assert not again["changed"] and again["changed_keys"] == []


def test_check_mode_writes_nothing(sysctl, tmp_path):
    before = values(sysctl)
    result = run(sysctl, tmp_path, check=True, interfaces=["eth1"], value="off")
    assert result["changed"] and "net.ipv4.conf.all.rp_filter = 0" in result["diff"]["after"]
    assert values(sysctl) == before and not (tmp_path / "sysctl.d").exists()


def test_absent_restores_originals_and_removes_the_file(sysctl, tmp_path):
    before = values(sysctl)
    run(sysctl, tmp_path, interfaces=["eth1"], value="off")
    result = run(sysctl, tmp_path, interfaces=["eth1"], state="absent")
    assert result["changed"] and values(sysctl) == before
    assert not (tmp_path / "sysctl.d" / "60-test.conf").exists()
    assert not run(sysctl, tmp_path, interfaces=["eth1"], state="absent")["changed"]


def test_absent_keeps_keys_another_interface_still_needs(sysctl, tmp_path):
    before = values(sysctl)
    run(sysctl, tmp_path, interfaces=["eth1"], value="off")
    run(sysctl, tmp_path, interfaces=["eth0"], value="off")
    run(sysctl, tmp_path, interfaces=["eth1"], state="absent")
    now = values(sysctl)
    # eth0 still relies on all being off; the keys raised for all stay raised with it
    assert now == {"all": 0, "default": 2, "lo": 2, "eth0": 0, "eth1": 1, "eth0.100": 2}
    run(sysctl, tmp_path, interfaces=["eth0"], state="absent")
    assert values(sysctl) == before
    assert not (tmp_path / "sysctl.d" / "60-test.conf").exists()


def test_persist_false_keeps_only_the_records(sysctl, tmp_path):
    run(sysctl, tmp_path, interfaces=["eth1"], value="off", persist=False)
    text = (tmp_path / "sysctl.d" / "60-test.conf").read_text()
    assert "# netops-original:" in text
    assert not [line for line in text.splitlines() if line and not line.startswith("#")]


def test_foreign_lines_in_the_file_are_kept(sysctl, tmp_path):
    path = tmp_path / "sysctl.d" / "60-test.conf"
    path.parent.mkdir()
    path.write_text("net.ipv4.ip_forward = 1\n")
    run(sysctl, tmp_path, interfaces=["eth1"], value="off")
    run(sysctl, tmp_path, interfaces=["eth1"], state="absent")
    assert "net.ipv4.ip_forward = 1" in path.read_text()


@pytest.mark.parametrize("params, message", [
    ({"interfaces": ["eth9"], "value": "off"}, "unknown interface"),
    ({"interfaces": ["a/b"], "value": "off"}, "not a valid interface name"),
    ({"interfaces": ["eth1:0"], "value": "off"}, "not a valid interface name: it contains ':'"),
    ({"interfaces": [" eth1"], "value": "off"}, "not a valid interface name: it contains ' '"),
    ({"interfaces": ["a=b"], "value": "off"}, "cannot be written in a sysctl.d file"),
    ({"interfaces": [], "value": "off"}, "at least one"),
    ({"interfaces": ["eth1"]}, "value is required"),
    ({"interfaces": ["eth1"], "value": "on"}, "off, strict or loose"),
    ({"interfaces": ["eth1"], "value": "off", "sysctl_file": "relative.conf"}, "absolute path"),
])
def test_validation_errors_change_nothing(sysctl, tmp_path, params, message):
    before = values(sysctl)
    with pytest.raises(ValidationError, match=message):
        run(sysctl, tmp_path, **params)
    assert values(sysctl) == before


def test_failed_write_rolls_back(sysctl, tmp_path, monkeypatch):
    before = values(sysctl)
    real_write = sysctl.write
    calls = []

    def write(iface, value):
        calls.append(iface)
        if len(calls) == 3:
            raise OSError(13, "Permission denied")
        real_write(iface, value)

    monkeypatch.setattr(sysctl, "write", write)
    with pytest.raises(ApplyError) as info:
        run(sysctl, tmp_path, interfaces=["eth1"], value="off")
    assert info.value.rolled_back
    assert values(sysctl) == before
    assert not os.path.exists(str(tmp_path / "sysctl.d" / "60-test.conf"))
