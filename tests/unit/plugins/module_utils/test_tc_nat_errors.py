"""Unit tests of tc_nat_filter's error paths (issue 13): a failed read is an error with its cause, never "nothing there";
shell-outs whose output is parsed run in the C locale; a failed daemon-reload does not undo correct kernel state."""

import errno
import subprocess

import pytest

from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import nft_backend as nftb
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import persist as p
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import kernel as nat_kernel
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import run as nat_run
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import tc_backend as tcb
from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ApplyError, NetlinkError, NetopsError

VIP = "192.168.99.10"


class Dumped(dict):
    """A dumped tc message as pyroute2 hands it over: header items, raw bytes in ``data`` from ``offset``."""

    def __init__(self, data):
        entry = tcb.decode_message(data)
        super(Dumped, self).__init__(index=entry["index"], parent=entry["parent"], header={"length": len(data)})
        self.data, self.offset = data, 0


class DumpingIPR(object):
    """The module's root qdisc on ifindex 2; classes and filters dumps answer ``errors`` (an errno, or None for [])."""

    def __init__(self, qdiscs=None, classes=None, filters=None):
        self.errors = {"qdiscs": qdiscs, "classes": classes, "filters": filters}

    def _answer(self, what, value):
        code = self.errors[what]
        if code is not None:
            raise NetlinkError(code, "dump refused")
        return value

    def get_qdiscs(self, index=None):
        return self._answer("qdiscs", [Dumped(tcb.encode(tcb.htb_qdisc_message(2), tcb.RTM_NEWQDISC, 0))])

    def get_classes(self, index=None):
        return self._answer("classes", [])

    def get_filters(self, index=None, parent=None):
        return self._answer("filters", [])


@pytest.mark.parametrize("where", ["qdiscs", "classes", "filters"])
def test_a_refused_tc_dump_is_an_error_with_its_cause(where):
    tc = tcb.TcBackend(DumpingIPR(**{where: errno.EPERM}), "eth0", 2)
    with pytest.raises(NetopsError) as info:
        tc.read()
    assert "eth0" in str(info.value) and "EPERM" in str(info.value), str(info.value)


@pytest.mark.parametrize("code", [errno.ENOENT, errno.ENODEV])
def test_a_tc_dump_answering_does_not_exist_means_nothing_there(code):
    state = tcb.TcBackend(DumpingIPR(filters=code, classes=code), "eth0", 2).read()
    assert state.root_ours and not state.leaves and not state.has_ht
    assert not tcb.TcBackend(DumpingIPR(qdiscs=code), "eth0", 2).read().exists


def nft_answering(answers):
    """An NftBackend whose ``nft`` answers (rc, out, err) per first argument that is not an option."""

    class Fake(nftb.NftBackend):
        def _run(self, args, stdin=None):
            key = "json" if args[0] == "-j" else args[0]
            return answers[key]

    return Fake("eth0", nft="/usr/sbin/nft")


@pytest.mark.parametrize("required", [False, True])
def test_a_failed_nft_list_is_an_error_not_a_missing_table(required):
    nft = nft_answering({"json": (1, "", "Error: Could not process rule: Operation not permitted\nlist table netdev netops_nat_eth0\n")})
    with pytest.raises(NetopsError, match="Operation not permitted"):
        nft.read(required=required)


def test_only_no_such_file_means_no_table():
    nft = nft_answering({"json": (1, "", "Error: No such file or directory\nlist table netdev netops_nat_eth0\n")})
    assert not nft.read().exists


def test_a_failed_second_listing_is_an_error_not_a_foreign_table():
    nft = nft_answering({"json": (0, '{"nftables": []}', ""), "list": (1, "", "Error: Could not process rule: Cannot allocate memory\n")})
    with pytest.raises(NetopsError, match="Cannot allocate memory"):
        nft.read()


def capture_env(monkeypatch, module):
    seen = []

    def fake_run(argv, **kwargs):
        seen.append(kwargs.get("env"))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(module.subprocess, "run", fake_run)
    return seen


def test_nft_runs_in_the_c_locale(monkeypatch):
    seen = capture_env(monkeypatch, nftb)
    nftb.NftBackend("eth0", nft="/usr/sbin/nft")._run(["list", "tables"])
    assert seen and seen[0] is not None and seen[0].get("LC_ALL") == "C"


def test_daemon_reload_runs_in_the_c_locale(monkeypatch):
    seen = capture_env(monkeypatch, p)
    p._daemon_reload()
    assert seen and seen[0] is not None and seen[0].get("LC_ALL") == "C"


# --- a failed daemon-reload after correct kernel state and boot files ------------------------------------------------


class LinkIPR(object):
    """IPRoute with device eth0 (ifindex 2) on the kernel's default qdisc."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def link_lookup(self, ifname):
        return [2] if ifname == "eth0" else []

    def get_qdiscs(self, index=None):
        return []


def test_a_failed_daemon_reload_keeps_the_kernel_change_and_the_boot_files(monkeypatch, tmp_path):
    loaded = []

    def fake_nft(self, args, stdin=None):
        if args[:1] == ["-f"]:
            loaded.append(stdin)
            return 0, "", ""
        return 1, "", "Error: No such file or directory\n"

    def failed_reload():
        raise subprocess.CalledProcessError(1, ["systemctl", "daemon-reload"], "", "Failed to connect to bus: No such file or directory")

    real_isdir = p.os.path.isdir
    units = str(tmp_path / "units")
    monkeypatch.setattr(nftb.NftBackend, "_run", fake_nft)
    monkeypatch.setattr(nftb.shutil, "which", lambda *args, **kwargs: "/usr/sbin/nft")
    monkeypatch.setattr(p, "DEFAULT_UNIT_DIR", units)  # as if writing to /etc/systemd/system
    monkeypatch.setattr(p.os.path, "isdir", lambda path: path == "/run/systemd/system" or real_isdir(path))
    monkeypatch.setattr(p, "_daemon_reload", failed_reload)
    params = {"device": "eth0", "backend": "nftables", "state": "present", "persist": True, "persist_dir": str(tmp_path / "etc"),
              "unit_dir": units, "rules": [{"src": "172.16.0.11", "sport": 53, "nat_to": VIP}]}
    with pytest.raises(ApplyError) as info:
        nat_run.run(params, ipr_factory=LinkIPR, detect=lambda: (False, "no act_nat"))
    assert info.value.rolled_back is False and info.value.changed is True
    message = str(info.value)
    assert "systemctl daemon-reload" in message and "Failed to connect to bus" in message, message
    assert "kept" in message, message
    # the table was loaded once and never taken back; the boot files are there
    assert len(loaded) == 1 and "172.16.0.11 . udp . 53 : 192.168.99.10" in loaded[0]
    files = p.Files("eth0", str(tmp_path / "etc"), units)
    assert sorted(files.read()) == sorted([files.restore["nftables"], files.unit, files.link])


def test_transparency_info_runs_its_commands_in_the_c_locale(monkeypatch):
    """transparency_info parses ``nft list ruleset`` and ``nginx -T``: their messages must not depend on the host's locale."""
    from ansible_collections.netops.ip_transparency.plugins.modules import transparency_info as module

    calls = []

    class FakeModule(object):
        params = {"tables": ["main"], "destinations": [], "nginx": False}

        def __init__(self, **kwargs):
            pass

        def get_bin_path(self, name, opt_dirs=None):
            return "/usr/sbin/" + name

        def run_command(self, argv, **kwargs):
            calls.append(kwargs)
            return 0, "", ""

        def exit_json(self, **kwargs):
            raise SystemExit(0)

        def fail_json(self, **kwargs):
            raise AssertionError(kwargs)

    class FakeIPRoute(object):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def gather(ipr, run_command, **kwargs):
        run_command(["nft", "list", "ruleset"])
        return {}

    monkeypatch.setattr(module, "gather", gather)
    module.snapshot(FakeModule(), FakeIPRoute())
    assert calls and (calls[0].get("environ_update") or {}).get("LC_ALL") == "C", calls


@pytest.mark.parametrize("name", ["modules", "config.gz", "kallsyms"])
def test_an_unreadable_kernel_file_is_an_error_not_a_missing_act_nat(tmp_path, name):
    """A file that is missing says nothing; one that is there but cannot be read is an error with its cause."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / name).mkdir()  # there, but reading it fails (EISDIR)
    with pytest.raises(NetopsError, match="Is a directory"):
        nat_kernel.act_nat_support("6.1.0-test", str(proc), str(tmp_path / "modules"), str(tmp_path / "boot"))
