"""Unit tests of how the modules end when the kernel or the file system fails under them.

Every module must end in ``fail_json`` with a message naming what failed and why (errno and
strerror, netlink code), the traceback in ``exception``, never in a raw exception (Ansible's
"MODULE FAILURE").
"""

import errno
import json

import pytest
from ansible.module_utils import basic

from ansible_collections.netops.ip_transparency.plugins.module_utils import _common as common
from ansible_collections.netops.ip_transparency.plugins.module_utils import _rp_filter
from ansible_collections.netops.ip_transparency.plugins.modules import ip_rule as ip_rule_module
from ansible_collections.netops.ip_transparency.plugins.modules import rp_filter as rp_filter_module
from ansible_collections.netops.ip_transparency.plugins.modules import transparency_info as transparency_info_module


class Ended(Exception):
    def __init__(self, failed, result):
        super(Ended, self).__init__(result)
        self.failed = failed
        self.result = result


@pytest.fixture
def run_main(monkeypatch):
    """Run a module's main() with ``args``; returns (failed, result) of exit_json/fail_json."""

    def exit_json(self, **result):
        raise Ended(False, result)

    def fail_json(self, msg, **result):
        result["msg"] = msg
        raise Ended(True, result)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(module, args):
        payload = dict(args, _ansible_diff=True, _ansible_check_mode=False)
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": payload}).encode("utf-8"))
        monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
        with pytest.raises(Ended) as ended:
            module.main()
        return ended.value.failed, ended.value.result

    return run


def test_rp_filter_ends_in_fail_json_when_reading_the_sysctl_fails(run_main, monkeypatch):
    path = "/proc/sys/net/ipv4/conf/eth0/rp_filter"

    def read_all(self):
        raise IOError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(_rp_filter.Sysctl, "read_all", read_all)
    failed, result = run_main(rp_filter_module, {"interfaces": ["eth0"], "value": "off", "sysctl_file": "/nonexistent/rp.conf"})
    assert failed
    assert path in result["msg"] and "Permission denied" in result["msg"] and "errno 13" in result["msg"], result
    assert "Traceback" in result["exception"] and "read_all" in result["exception"]


class RefusingIPRoute(object):
    """An IPRoute whose every dump is refused by the kernel."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):
        def refused(*args, **kwargs):
            raise common.NetlinkError(errno.EPERM, "Operation not permitted")

        return refused


@pytest.mark.parametrize("module, args", [
    (ip_rule_module, {"fwmark": 1, "table": 100, "priority": 100}),
    (transparency_info_module, {}),
])
def test_a_netlink_error_while_reading_ends_in_fail_json(run_main, monkeypatch, module, args):
    monkeypatch.setattr(module, "IPRoute", RefusingIPRoute)
    failed, result = run_main(module, args)
    assert failed
    assert "netlink error 1" in result["msg"] and "EPERM" in result["msg"] and "Operation not permitted" in result["msg"], result
    assert "Traceback" in result["exception"]
