"""Unit tests of the collection's one transaction engine (_transaction) and its atomic file writer."""

import os

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils import _transaction as tx
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ApplyError, NetlinkError
from ansible_collections.netops.ip_transparency.plugins.module_utils._netlink import UndoLog


def fail(message="kernel says no"):
    def raise_it():
        raise RuntimeError(message)
    return raise_it


def test_apply_steps_undoes_in_reverse_on_failure():
    log = []
    steps = [tx.Step("one", lambda: log.append("do 1"), lambda: log.append("undo 1")),
             tx.Step("two", lambda: log.append("do 2"), None),
             tx.Step("three", lambda: log.append("do 3"), lambda: log.append("undo 3")),
             tx.Step("four", fail(), lambda: log.append("undo 4"))]
    with pytest.raises(ApplyError) as info:
        tx.apply_steps(steps)
    assert info.value.rolled_back is True
    # "two" has nothing to undo: only what is rolled back is counted
    assert str(info.value) == "four failed: kernel says no; 2 earlier change(s) rolled back"
    assert log == ["do 1", "do 2", "do 3", "undo 3", "undo 1"]


def test_apply_steps_reports_a_failed_undo():
    with pytest.raises(ApplyError) as info:
        tx.apply_steps([tx.Step("one", lambda: None, fail("boom")), tx.Step("two", fail("boom"))])
    assert info.value.rolled_back is False and "rolling back the earlier changes also failed: undo of one: boom" in str(info.value)


def test_a_partial_step_undoes_itself_too():
    log = []

    def half():
        log.append("half done")
        raise OSError(13, "Permission denied")

    with pytest.raises(ApplyError) as info:
        tx.apply_steps([tx.Step("one", lambda: log.append("do 1"), lambda: log.append("undo 1")),
                        tx.Step("two", half, lambda: log.append("undo 2"), partial=True)])
    assert log == ["do 1", "half done", "undo 2", "undo 1"]
    assert str(info.value) == "two failed: Permission denied (errno 13); what it had changed and 1 earlier change(s) rolled back"


def test_the_undo_log_is_the_engine_and_names_netlink_errors():
    log = UndoLog()
    undone = []
    log.run("adding rule 'a'", lambda: None, lambda: undone.append("a"))

    def refused():
        raise NetlinkError(17, "exists")

    with pytest.raises(ApplyError) as info:
        log.run("adding rule 'b'", refused, lambda: undone.append("b"))
    assert str(info.value) == "adding rule 'b' failed: File exists (errno 17); 1 earlier change(s) rolled back"
    assert undone == ["a"] and info.value.rolled_back


def test_write_file_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / "new" / "dir" / "file.conf")
    tx.write_file(path, "one\n")
    tx.write_file(path, "two\n")
    with open(path) as handle:
        assert handle.read() == "two\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert os.listdir(os.path.dirname(path)) == ["file.conf"]
    tx.remove_file(path)
    tx.remove_file(path)
    assert os.listdir(os.path.dirname(path)) == []


def test_write_file_cleans_up_when_it_fails(tmp_path, monkeypatch):
    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tx.os, "rename", no_rename)
    with pytest.raises(OSError):
        tx.write_file(str(tmp_path / "file.conf"), "content")
    assert os.listdir(str(tmp_path)) == []
