"""The troubleshooter names a host's missing prerequisites (issue 17, item 8): a host without pyroute2 cannot be read
at all, and the finding says what to install there rather than only that it could not be read."""

from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _checks as checks

from .troubleshoot_fakes import config, lab, problems

NO_PYROUTE2 = [{"name": "pyroute2", "package": "python3-pyroute2",
                "reason": "/usr/bin/python3 cannot import pyroute2 (ModuleNotFoundError: No module named 'pyroute2')"}]


def test_a_host_without_pyroute2_is_a_prerequisites_finding_with_the_package_to_install():
    hosts = lab()
    hosts["upstream1"].update(unreachable="Failed to import the required Python library (pyroute2)", facts={},
                              prerequisites=NO_PYROUTE2)
    findings = [f for f in checks.diagnose(config(), hosts) if f["host"] == "upstream1" and f["check"] == "prerequisites"]
    assert len(findings) == 1, findings
    assert findings[0]["severity"] == "error"
    assert "pyroute2" in findings[0]["problem"]
    assert NO_PYROUTE2[0]["reason"] in findings[0]["evidence"]
    assert "apt-get install python3-pyroute2" in findings[0]["fix"] and "upstream1" in findings[0]["fix"]


def test_a_host_that_has_them_gets_no_prerequisites_problem():
    hosts = lab()
    for entry in hosts.values():
        entry["prerequisites"] = []
    assert [p for p in problems(checks.diagnose(config(), hosts)) if p[1] == "prerequisites"] == []
