"""Unit tests of _prerequisites.py: what a host lacks of what the modules and roles run there (issue 17, item 8)."""

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils import _prerequisites as prereq


def found(*names):
    """A `which` that finds only ``names``."""
    return lambda name, path=None: "/usr/sbin/%s" % name if name in names else None


def has(version):
    return lambda: (version, None)


def test_a_missing_pyroute2_names_the_interpreter_the_error_and_the_debian_package():
    result = prereq.missing_items(probe=lambda: (None, "ModuleNotFoundError: No module named 'pyroute2'"), find=found(),
                                  executable="/usr/bin/python3")
    assert [(m["name"], m["package"]) for m in result["missing"]] == [("pyroute2", "python3-pyroute2")]
    assert "/usr/bin/python3 cannot import pyroute2" in result["summary"]
    assert "apt-get install python3-pyroute2" in result["summary"]
    # the system's interpreter: the Debian package is the way; another interpreter gets pip as well
    assert "ansible_python_interpreter" not in result["summary"]
    other = prereq.missing_items(probe=lambda: (None, "ImportError"), find=found(), executable="/opt/venv/bin/python")
    assert "pyroute2 >= 0.7.2 into /opt/venv/bin/python" in other["summary"]


@pytest.mark.parametrize("version,too_old", [("0.5.14", True), ("0.7.1", True), ("0.7.2", False), ("0.9.7", False),
                                             ("0.7.10", False), ("unknown", False)])
def test_pyroute2_older_than_0_7_2_is_missing(version, too_old):
    result = prereq.missing_items(probe=has(version), find=found())
    assert bool(result["missing"]) is too_old
    if too_old:
        assert "pyroute2 %s, older than 0.7.2" % version in result["missing"][0]["reason"]


def test_commands_are_looked_for_once_and_named_with_their_package():
    result = prereq.missing_items(probe=has("0.9.7"), commands=["nft", "unshare", "ip", "nft"], find=found("ip"))
    assert [(m["name"], m["package"]) for m in result["missing"]] == [("nft", "nftables"), ("unshare", "util-linux")]
    assert result["packages"] == ["nftables", "util-linux"]
    assert result["commands"] == {"nft": None, "unshare": None, "ip": "/usr/sbin/ip"}
    assert "apt-get install nftables util-linux" in result["summary"]


def test_nothing_missing_means_an_empty_summary():
    result = prereq.missing_items(probe=has("0.9.7"), commands=["nft"], find=found("nft"))
    assert result["missing"] == [] and result["summary"] == "" and result["packages"] == []


@pytest.mark.parametrize("backend,act_nat,persist,needed", [
    ("nftables", True, True, "nft"),
    ("tc", True, True, "tc"),
    ("tc", True, False, None),
    ("auto", True, True, "tc"),
    ("auto", False, True, "nft"),
    ("auto", False, False, "nft"),
])
def test_the_nat_backend_needs_nft_or_tc_as_tc_nat_filter_would_write(backend, act_nat, persist, needed):
    result = prereq.missing_items(probe=has("0.9.7"), nat_backend=backend, nat_persist=persist, find=found(),
                                  act_nat=lambda: (act_nat, "test"))
    assert [m["name"] for m in result["missing"]] == ([needed] if needed else [])
    assert result["nat_backend"] == ("tc" if backend == "tc" or (backend == "auto" and act_nat) else "nftables")


def test_systemd_is_missing_without_its_runtime_directory(tmp_path):
    result = prereq.missing_items(probe=has("0.9.7"), systemd=True, find=found(), systemd_dir=str(tmp_path / "none"))
    assert [(m["name"], m["package"]) for m in result["missing"]] == [("systemd", "systemd")]
    assert prereq.missing_items(probe=has("0.9.7"), systemd=True, find=found(), systemd_dir=str(tmp_path))["missing"] == []


def test_the_probe_reports_this_interpreters_pyroute2():
    version, error = prereq.probe_pyroute2()
    pyroute2 = pytest.importorskip("pyroute2")
    assert error is None and version == pyroute2.__version__


class _Module(object):
    def __init__(self, version):
        if version is not None:
            self.__version__ = version


def _no_metadata(name):
    raise LookupError(name)


@pytest.mark.parametrize("attribute,metadata,expected", [
    ("0.9.7", "0.9.7", "0.9.7"),
    # Debian 12's python3-pyroute2: __version__ 'unknown', the dist-info says 0.7.2
    ("unknown", "0.7.2", "0.7.2"),
    (None, "0.7.2", "0.7.2"),
    ("unknown", None, "unknown"),
])
def test_pyroute2_version_falls_back_to_the_distribution_metadata(attribute, metadata, expected):
    dist = (lambda name: metadata) if metadata else _no_metadata
    assert prereq.pyroute2_version(_Module(attribute), dist) == expected
