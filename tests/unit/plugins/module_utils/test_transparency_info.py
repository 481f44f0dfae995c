"""Unit tests of transparency_info's file readers: only "no such file" means absent; any other failure is an error."""

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils import _transparency_info as info
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ReadError


def test_a_missing_sysctl_or_log_is_absent(tmp_path):
    assert info._read(str(tmp_path / "missing")) is None
    assert info.error_log_tail(str(tmp_path / "missing")) == []


def test_a_sysctl_that_is_there_but_unreadable_is_an_error_with_its_cause(tmp_path):
    (tmp_path / "ip_forward").mkdir()  # there, but reading it fails (EISDIR)
    with pytest.raises(ReadError, match="Is a directory"):
        info._read(str(tmp_path / "ip_forward"))


def test_an_error_log_that_is_there_but_unreadable_is_an_error_with_its_cause(tmp_path):
    (tmp_path / "error.log").mkdir()
    with pytest.raises(ReadError, match="Is a directory"):
        info.error_log_tail(str(tmp_path / "error.log"))


def test_the_error_log_tail_keeps_the_transparent_binding_lines(tmp_path):
    log = tmp_path / "error.log"
    log.write_text(u"noise\nbind(1.2.3.4) failed (IP_TRANSPARENT)\nmore noise\n")
    assert info.error_log_tail(str(log)) == ["bind(1.2.3.4) failed (IP_TRANSPARENT)"]


def test_rules_carry_their_protocol_and_source_port_selectors():
    from .netlink_fakes import FakeIPRoute, rule_msg
    ipr = FakeIPRoute(rules=[rule_msg(priority=0, table=255),
                             rule_msg(priority=1000, table=200, FRA_IP_PROTO=6, FRA_SPORT_RANGE="80:80"),
                             rule_msg(priority=1001, table=200, FRA_IP_PROTO=17, FRA_SPORT_RANGE={"start": 5300, "end": 5310}),
                             rule_msg(priority=1002, table=200, FRA_IP_PROTO=132),
                             rule_msg(priority=32766, table=254)])
    found = [(r["priority"], r["ipproto"], r["sport"]) for r in info.rules(ipr)]
    assert found == [(0, None, None), (1000, "tcp", [80, 80]), (1001, "udp", [5300, 5310]), (1002, "sctp", None), (32766, None, None)]
    assert info.rules(ipr)[1]["table"] == 200 and info.rules(ipr)[1]["selectors"]
    lines = [r["line"] for r in info.rules(ipr)[1:4]]
    assert "ipproto tcp" in lines[0] and "sport 80 " in lines[0] and "ip_proto" not in lines[0] and "sport_range" not in lines[0]
    assert "ipproto udp" in lines[1] and "sport 5300-5310 " in lines[1]
    assert lines[2] == "1002: from all ipproto sctp lookup 200"
