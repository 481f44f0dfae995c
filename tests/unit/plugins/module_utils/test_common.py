"""Unit tests of common.py: address parsing and the modules' shared outcome."""

import errno

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils import _common as common


def test_parse_prefix_refuses_host_bits_and_names_both_readings():
    with pytest.raises(common.ValidationError) as err:
        common.parse_prefix("172.16.0.1/24")
    assert "172.16.0.0/24" in str(err.value) and "172.16.0.1/32" in str(err.value)


def test_parse_prefix_takes_an_address_as_a_host_prefix():
    assert str(common.parse_prefix("172.16.0.11")) == "172.16.0.11/32"


def test_same_family_refuses_a_mix():
    with pytest.raises(common.ValidationError):
        common.same_family([common.parse_address("10.0.0.1"), common.parse_address("2001:db8::1")])


def test_outcome_keeps_diff_only_when_asked():
    ok, result = common.outcome(lambda: {"changed": True, "diff": {"before": "", "after": "x\n"}}, diff=False)
    assert ok and result == {"changed": True}
    ok, result = common.outcome(lambda: {"changed": True, "diff": {"before": "", "after": "x\n"}}, diff=True)
    assert ok and result["diff"]["after"] == "x\n"


def test_outcome_turns_domain_errors_into_failures():
    def half_applied():
        raise common.ApplyError("route refused", rolled_back=True)

    def bad_input():
        raise common.ValidationError("unknown interface 'eth9'")

    assert common.outcome(half_applied, diff=True) == (False, {"msg": "route refused", "rolled_back": True, "changed": False})
    assert common.outcome(bad_input, diff=True) == (False, {"msg": "unknown interface 'eth9'"})


def test_a_change_that_was_not_rolled_back_is_reported_as_a_change():
    """The host was changed and kept so (a failed undo, or a failed daemon-reload after correct rules): the failed
    task must say changed, or a handler or a 'changed' condition would never see it."""
    def kept():
        raise common.ApplyError("daemon-reload failed; the rules are kept", rolled_back=False)

    assert common.outcome(kept, diff=False) == (False, {"msg": "daemon-reload failed; the rules are kept", "rolled_back": False, "changed": True})


def test_outcome_names_an_os_error_with_its_path_and_errno():
    def read():
        raise OSError(errno.ENOENT, "No such file or directory", "/proc/sys/net/ipv4/conf/eth9/rp_filter")

    ok, failure = common.outcome(read, diff=True)
    assert not ok
    assert failure["msg"].startswith("unexpected error in test_common.py line ")
    assert failure["msg"].endswith(".read): /proc/sys/net/ipv4/conf/eth9/rp_filter: No such file or directory (errno 2, ENOENT)")
    assert "Traceback" in failure["exception"] and "OSError" in failure["exception"]


def test_outcome_names_a_netlink_error_with_its_code():
    def dump():
        raise common.NetlinkError(errno.EPERM, "Operation not permitted")

    ok, failure = common.outcome(dump, diff=False)
    assert not ok and failure["msg"].endswith("netlink error 1 (EPERM): Operation not permitted"), failure
    assert "NetlinkError" in failure["exception"]


def test_outcome_turns_a_bug_into_a_failure_with_its_traceback():
    def broken():
        raise KeyError("bug")

    ok, failure = common.outcome(broken, diff=True)
    assert not ok and failure["msg"].endswith("KeyError: 'bug'"), failure
    assert "Traceback" in failure["exception"]


@pytest.mark.parametrize("name", ["eth0", "eth0.100", "all", "default", "x" * 15, "veth-a_b@c", "br=0", "\u00e9th0"])
def test_check_ifname_takes_what_the_kernel_takes(name):
    assert common.check_ifname(name, "device") == name


@pytest.mark.parametrize("name, problem", [
    ("", "empty"),
    ("x" * 16, "16 bytes long"),
    ("\u00e9" * 8, "16 bytes long"),  # 8 characters, 16 UTF-8 bytes: IFNAMSIZ counts bytes
    (".", "reserved"),
    ("..", "reserved"),
    ("a/b", "'/'"),
    ("eth0:1", "':'"),  # an address label, not a device name (dev_valid_name refuses ':')
    ("bad name", "' '"),
    ("tab\tname", "'\\t'"),
    ("nl\n", "'\\n'"),
    ("nul\x00", "'\\x00'"),
    ("\u00e0", "'\\xa0'"),  # U+00E0 is C3 A0 in UTF-8: the kernel's isspace() counts 0xa0
])
def test_check_ifname_refuses_what_the_kernel_refuses(name, problem):
    with pytest.raises(common.ValidationError) as err:
        common.check_ifname(name, "iif")
    assert str(err.value).startswith("iif %r is not a valid interface name: " % name) and problem in str(err.value)


def test_check_ifname_passes_an_option_not_given():
    assert common.check_ifname(None) is None
