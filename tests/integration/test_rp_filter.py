"""Real-kernel tests of the rp_filter module: /proc/sys/net is per network namespace."""

import pytest

DUMP = "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo \"$f $(cat $f)\"; done"
SETUP = ("ip link add v0 type veth peer name v0.100 && echo 2 > /proc/sys/net/ipv4/conf/all/rp_filter"
         " && echo 1 > /proc/sys/net/ipv4/conf/v0/rp_filter")


@pytest.fixture
def ns(netns, sh):
    """all=loose, v0=strict, v0.100/lo/default=off: v0.100 is filtered (loosely) only because of all."""
    name = netns()
    sh(name, SETUP)
    return name


def read(sh, ns, iface):
    return int(sh(ns, "cat /proc/sys/net/ipv4/conf/%s/rp_filter" % iface))


def test_effective_off_is_idempotent_persisted_and_absent_restores(ns, sh, run_module, tmp_path):
    conf = str(tmp_path / "sysctl.d" / "60-netops-rp-filter.conf")
    baseline = sh(ns, DUMP)
    result = run_module(ns, "rp_filter", {"interfaces": ["v0.100"], "value": "off", "sysctl_file": conf})
    assert result["rc"] == 0 and result["changed"], result
    assert result["values"]["v0.100"] == {"configured": "off", "effective": "off"}
    assert result["values"]["v0"] == {"configured": "loose", "effective": "loose"}
    assert (read(sh, ns, "all"), read(sh, ns, "v0.100"), read(sh, ns, "v0"), read(sh, ns, "default"), read(sh, ns, "lo")) == (0, 0, 2, 2, 2)
    assert "net/ipv4/conf/v0.100/rp_filter" in result["diff"]["after"]
    text = open(conf).read()
    assert "net/ipv4/conf/v0.100/rp_filter = 0\n" in text and "net.ipv4.conf.all.rp_filter = 0\n" in text

    again = run_module(ns, "rp_filter", {"interfaces": ["v0.100"], "value": 0, "sysctl_file": conf})
    assert again["rc"] == 0 and not again["changed"], again

    removed = run_module(ns, "rp_filter", {"interfaces": ["v0.100"], "state": "absent", "sysctl_file": conf})
    assert removed["changed"], removed
    assert sh(ns, DUMP) == baseline
    assert not (tmp_path / "sysctl.d" / "60-netops-rp-filter.conf").exists()


def test_the_persisted_file_holds_after_a_reboot(netns, ns, sh, run_module, tmp_path):
    conf = str(tmp_path / "60-netops-rp-filter.conf")
    run_module(ns, "rp_filter", {"interfaces": ["v0.100", "v0"], "value": "strict", "sysctl_file": conf})
    wanted = sh(ns, DUMP)
    rebooted = netns()  # a new namespace is what a rebooted container gets: the kernel's defaults
    sh(rebooted, "ip link add v0 type veth peer name v0.100")
    sh(rebooted, "sysctl -q -p %s" % conf)
    assert sh(rebooted, DUMP) == wanted


def test_without_effective_only_the_listed_key_changes(ns, sh, run_module, tmp_path):
    conf = str(tmp_path / "rp.conf")
    result = run_module(ns, "rp_filter", {"interfaces": ["v0"], "value": "off", "effective": False, "persist": False, "sysctl_file": conf})
    assert result["changed"] and result["changed_keys"] == ["net.ipv4.conf.v0.rp_filter"]
    assert result["values"]["v0"] == {"configured": "off", "effective": "loose"}
    assert read(sh, ns, "all") == 2
    assert not [line for line in open(conf).read().splitlines() if line and not line.startswith("#")]


def test_all_and_default_can_be_listed(ns, sh, run_module, tmp_path):
    conf = str(tmp_path / "rp.conf")
    baseline = sh(ns, DUMP)
    result = run_module(ns, "rp_filter", {"interfaces": ["all", "default", "v0.100"], "value": "loose", "sysctl_file": conf})
    assert result["rc"] == 0 and result["changed"]
    assert (read(sh, ns, "all"), read(sh, ns, "default"), read(sh, ns, "v0.100")) == (2, 2, 2)
    assert run_module(ns, "rp_filter", {"interfaces": ["all", "default", "v0.100"], "state": "absent", "sysctl_file": conf})["changed"]
    assert sh(ns, DUMP) == baseline


def test_check_mode_reports_and_changes_nothing(ns, sh, run_module, tmp_path):
    conf = tmp_path / "rp.conf"
    baseline = sh(ns, DUMP)
    result = run_module(ns, "rp_filter", {"interfaces": ["v0.100"], "value": "off", "sysctl_file": str(conf)}, check=True)
    assert result["rc"] == 0 and result["changed"] and result["diff"]["before"] != result["diff"]["after"]
    assert sh(ns, DUMP) == baseline and not conf.exists()


@pytest.mark.parametrize("args, message", [
    ({"interfaces": ["nosuchdev"], "value": "off"}, "unknown interface(s) nosuchdev"),
    ({"interfaces": ["v0"], "value": "sometimes"}, "off, strict or loose"),
    ({"interfaces": ["v0"]}, "value"),
])
def test_bad_input_fails_clearly_and_changes_nothing(ns, sh, run_module, tmp_path, args, message):
    conf = tmp_path / "rp.conf"
    baseline = sh(ns, DUMP)
    result = run_module(ns, "rp_filter", dict(args, sysctl_file=str(conf)))
    assert result.get("failed") and result["rc"] != 0 and message in result["msg"], result
    assert sh(ns, DUMP) == baseline and not conf.exists()


def test_a_later_run_lowers_all_again_when_another_file_raised_it(ns, sh, run_module, tmp_path):
    assert run_module(ns, "rp_filter", {"interfaces": ["all"], "value": "loose", "sysctl_file": str(tmp_path / "a.conf")})["rc"] == 0
    result = run_module(ns, "rp_filter", {"interfaces": ["v0"], "value": "off", "sysctl_file": str(tmp_path / "b.conf")})
    assert result["rc"] == 0 and result["changed"]
    assert (read(sh, ns, "all"), read(sh, ns, "v0"), read(sh, ns, "v0.100")) == (0, 0, 2)


def test_a_file_system_error_while_reading_ends_in_a_clean_failure(ns, run_module, tmp_path):
    """Defect 7: an OSError during a read (here the managed file is a directory) is a fail_json naming the path and
    errno with the traceback in ``exception``, not a raw MODULE FAILURE."""
    folder = tmp_path / "is-a-directory.conf"
    folder.mkdir()
    # as the controller asks with ANSIBLE_DISPLAY_TRACEBACK=error
    args = {"interfaces": ["v0"], "value": "off", "sysctl_file": str(folder), "_ansible_tracebacks_for": ["error"]}
    result = run_module(ns, "rp_filter", args)
    assert result["rc"] == 1 and result["failed"], result
    assert str(folder) in result["msg"] and "errno 21" in result["msg"] and "Is a directory" in result["msg"], result
    assert "Traceback" in result["exception"]
