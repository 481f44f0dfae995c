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
