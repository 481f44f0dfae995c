# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Boot persistence of tc_nat_filter's rules: a restore file per backend and a systemd unit per device.

The kernel forgets qdiscs, filters and nftables tables at reboot. With ``persist`` the module keeps,
next to what it sets in the kernel, the files that set it again at boot without Ansible:

- ``<persist_dir>/nat-<device>.nft``: the nft transaction that (re)creates the device's table (the
  same script the nftables backend loads, so running it twice is harmless), exclusion sets included;
- ``<persist_dir>/nat-<device>.tc``: the ``tc -batch`` commands that build the tc backend's qdisc, hash
  table, pass filters of the excluded destinations and nat filters on a device whose root qdisc is the
  kernel's default;
- ``<unit_dir>/netops-nat-<device>.service``: a oneshot unit that loads them after the network is up,
  enabled through the ``multi-user.target.wants`` link (what ``systemctl enable`` creates).

The files always say what the kernel holds after the run: they are written with the kernel change,
in the same transaction (undone if a later step fails), and removed when no rule is left or when
``persist`` is off (a boot file the caller no longer wants would bring old rules back). ``systemctl
daemon-reload`` follows the transaction: it cannot be undone, and the state it comes after is correct.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ApplyError, ValidationError, c_locale_env
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import nft_backend, tc_backend
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat.model import device_id
from ansible_collections.netops.ip_transparency.plugins.module_utils._transaction import Step, remove_file, write_file

DEFAULT_PERSIST_DIR = "/etc/netops-ip-transparency"
DEFAULT_UNIT_DIR = "/etc/systemd/system"
WANTS = "multi-user.target.wants"
HEADER = "# Written by netops.ip_transparency.tc_nat_filter for %s; it is rewritten by the module, do not edit.\n"

UNIT = """# Written by netops.ip_transparency.tc_nat_filter; it is rewritten by the module, do not edit.
# Restores at boot the stateless source rewrite of %(device)s (tc_nat_filter with persist: true).
[Unit]
Description=netops.ip_transparency: stateless source NAT on %(device)s
After=network.target
Before=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
%(exec)s
[Install]
WantedBy=multi-user.target
"""


def unit_name(device):
    return "netops-nat-%s.service" % device_id(device)


def _systemd_escape(text):
    """A word for ExecStart: systemd expands ``%`` specifiers and ``$`` variables."""
    return text.replace("%", "%%").replace("$", "$$")


class Files(object):
    """The paths of one device's boot files."""

    def __init__(self, device, persist_dir=DEFAULT_PERSIST_DIR, unit_dir=DEFAULT_UNIT_DIR):
        for what, path in (("persist_dir", persist_dir), ("unit_dir", unit_dir)):
            if not path or not os.path.isabs(path):
                raise ValidationError("%s must be an absolute path (got %r)" % (what, path))
        self.device = device
        self.unit_dir = unit_dir
        ident = device_id(device)
        self.restore = {
            "nftables": os.path.join(persist_dir, "nat-%s.nft" % ident),
            "tc": os.path.join(persist_dir, "nat-%s.tc" % ident),
        }
        self.unit = os.path.join(unit_dir, unit_name(device))
        self.link = os.path.join(unit_dir, WANTS, unit_name(device))

    def exec_lines(self, backends):
        dev = _systemd_escape(self.device)
        lines = []
        if "tc" in backends:
            # a root qdisc left by the module before a restart of the unit goes first ("-": the usual case at
            # boot is that there is none); the kernel refuses to delete a root qdisc of another handle
            lines.append("ExecStart=-tc qdisc del dev %s root handle d5:" % dev)
            lines.append("ExecStart=tc -batch %s" % _systemd_escape(self.restore["tc"]))
        if "nftables" in backends:
            lines.append("ExecStart=nft -f %s" % _systemd_escape(self.restore["nftables"]))
        return lines

    def wanted(self, rules_by_backend, persist, exclusions_by_backend=None):
        """{path: content or link target}, what the boot files should be for the rules the device ends with.

        ``rules_by_backend``: {"tc": [Rule], "nftables": [Rule]} after the run; ``exclusions_by_backend`` the same
        for the excluded destinations (ip_network), restored with the rules.
        """
        exclusions = exclusions_by_backend or {}
        held = [name for name in ("tc", "nftables") if rules_by_backend.get(name)]
        if not persist or not held:
            return {}
        files = {}
        header = HEADER % self.device
        if "tc" in held:
            batch = tc_backend.boot_batch(self.device, rules_by_backend["tc"], exclusions.get("tc", ()))
            files[self.restore["tc"]] = header + "".join(line + "\n" for line in batch)
        if "nftables" in held:
            files[self.restore["nftables"]] = header + nft_backend.replace_script(self.device, rules_by_backend["nftables"], exclusions.get("nftables", ()))
        files[self.unit] = UNIT % {"device": self.device, "exec": "".join(line + "\n" for line in self.exec_lines(held))}
        files[self.link] = Link(self.unit)
        return files

    def paths(self):
        return [self.restore["tc"], self.restore["nftables"], self.unit, self.link]

    def read(self):
        """{path: content or Link} of the boot files that exist now."""
        found = {}
        for path in self.paths():
            if os.path.islink(path):
                found[path] = Link(os.readlink(path))
            elif os.path.isfile(path):
                with open(path) as handle:
                    found[path] = handle.read()
        return found


class Link(str):
    """A symbolic link's target, told apart from file content."""


def lines(files):
    """Readable lines of boot files for the diff."""
    out = []
    for path in sorted(files):
        content = files[path]
        if isinstance(content, Link):
            out.append("link %s -> %s" % (path, content))
            continue
        out.append("file %s" % path)
        out.extend("    " + line for line in content.splitlines())
    return out


def plan(current, wanted, unit_dir):
    """Steps that turn the boot files ``current`` into ``wanted`` (each undone by putting back what was there).

    A content of None means no file: writing it removes the path."""
    steps = []
    for path in sorted(set(current) | set(wanted)):
        have, want = current.get(path), wanted.get(path)
        if have == want and type(have) is type(want):
            continue
        if want is None:
            line = "rm %s" % path
        elif isinstance(want, Link):
            line = "ln -s %s %s" % (want, path)
        else:
            line = "write %s" % path
        steps.append(Step(line, _writer(path, want), _writer(path, have)))
    return steps


RELOAD_LINE = "systemctl daemon-reload"


def reload_wanted(steps, unit_dir):
    """Whether systemd should re-read the unit files after ``steps`` (the boot file changes) were applied.

    systemd reads unit files at boot anyway; the reload keeps ``systemctl status`` from calling them changed on disk.
    It comes after the transaction, not in it: nothing can undo it, and its failure leaves the kernel and the files
    right (see reload_systemd)."""
    return bool(steps) and unit_dir == DEFAULT_UNIT_DIR and os.path.isdir("/run/systemd/system")


def reload_systemd():
    """``systemctl daemon-reload`` once the kernel and the boot files are what they should be.

    Its failure is reported as such (ApplyError, rolled_back false): what was applied is correct and is kept."""
    try:
        _daemon_reload()
    except subprocess.CalledProcessError as exc:
        raise ApplyError(_reload_failure("exit status %d: %s" % (exc.returncode, " ".join((exc.stderr or "").split()))), rolled_back=False)
    except OSError as exc:
        raise ApplyError(_reload_failure(str(exc)), rolled_back=False)


def _reload_failure(cause):
    return ("the NAT rules and the boot files were applied and are kept (nothing was rolled back), but %s failed (%s): "
            "systemd still has the old unit files loaded until it is run again" % (RELOAD_LINE, cause))


def _writer(path, content):
    """A step's do/undo: make ``path`` hold ``content`` (a Link: a symbolic link; None: nothing)."""
    def write():
        if content is None:
            remove_file(path)
        elif isinstance(content, Link):
            directory = os.path.dirname(path)
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            remove_file(path)
            os.symlink(content, path)
        else:
            write_file(path, content)
    return write


def _daemon_reload():
    subprocess.run(["systemctl", "daemon-reload"], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                   env=c_locale_env())
