# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""What a managed host lacks of what the collection's modules and roles run there: pyroute2 (importable, recent
enough) for the interpreter the modules run with, commands (found the way the modules and the roles' commands
find them), systemd as the init system, and what a tc_nat_filter backend needs. Read-only.

Every missing item names the Debian package that provides it, so that a role's preflight can refuse a host with
one message before it changes anything (issue 17, item 8).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import sys

MIN_PYROUTE2 = (0, 7, 2)

# the directories the modules add to PATH when they look for a command (get_bin_path's opt_dirs, nft_backend)
SBIN = "/usr/sbin:/sbin:/usr/local/sbin"

# command -> (Debian package, what the collection runs it for)
COMMANDS = {
    "nft": ("nftables", "nftables rules"),
    "tc": ("iproute2", "tc"),
    "ip": ("iproute2", "ip"),
    "unshare": ("util-linux", "unshare"),
    "sysctl": ("procps", "sysctl"),
    "systemctl": ("systemd", "systemd units"),
}


def which(name, path=None):
    """A command as the modules find it: in PATH, else in the sbin directories."""
    return shutil.which(name, path=path) or shutil.which(name, path=SBIN)


def version_tuple(text):
    """'0.9.7' -> (0, 9, 7); the leading numbers of each dot-separated part ('0.7.2.post1' -> (0, 7, 2, 1))."""
    parts = []
    for part in str(text or "").split("."):
        match = re.match(r"[0-9]+", part)
        if match is None:
            break
        parts.append(int(match.group(0)))
    return tuple(parts)


def probe_pyroute2():
    """(version or None, error or None) of pyroute2 as this interpreter imports it (the modules import IPRoute)."""
    try:
        import pyroute2  # pylint: disable=import-outside-toplevel
        from pyroute2 import IPRoute  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
    except Exception as exc:  # pylint: disable=broad-except
        return None, "%s: %s" % (type(exc).__name__, exc)
    return pyroute2_version(pyroute2), None


def _dist_version(name):
    # importlib.metadata is Python 3.8+: on older Pythons the ImportError is caught by the caller ('unknown')
    from importlib.metadata import version as dist_version  # pylint: disable=import-outside-toplevel  # novermin
    return dist_version(name)


def pyroute2_version(module, dist_version=_dist_version):
    """pyroute2's version: its __version__, else its distribution's metadata (Debian's python3-pyroute2 0.7.2 says
    __version__ 'unknown'), else 'unknown'."""
    version = getattr(module, "__version__", None)
    if version and version_tuple(version):
        return str(version)
    try:
        version = dist_version("pyroute2")
    except Exception:  # pylint: disable=broad-except
        version = None
    return str(version) if version and version_tuple(version) else "unknown"


def missing_items(pyroute2=True, commands=(), systemd=False, nat_backend=None, nat_persist=False,
                  probe=probe_pyroute2, find=which, act_nat=None, systemd_dir="/run/systemd/system",
                  executable=None):
    """The result: what was found and the list of what is missing, each {name, package, reason}."""
    executable = executable or sys.executable
    missing = []
    found = {}
    result = {"python": executable, "pyroute2_version": None, "commands": found}
    if pyroute2:
        version, error = probe()
        result["pyroute2_version"] = version
        if error is not None:
            missing.append({"name": "pyroute2", "package": "python3-pyroute2",
                            "reason": "%s cannot import pyroute2 (%s)" % (executable, error)})
        elif version != "unknown" and version_tuple(version) < MIN_PYROUTE2:
            missing.append({"name": "pyroute2", "package": "python3-pyroute2",
                            "reason": "%s has pyroute2 %s, older than %s" % (executable, version, ".".join(map(str, MIN_PYROUTE2)))})
    wanted = list(commands)
    backend = None
    if nat_backend:
        backend, why = nat_backend, "tc_nat_filter backend %s" % nat_backend
        if nat_backend == "auto":
            available, how = act_nat() if act_nat is not None else (False, "not looked for")
            backend = "tc" if available else "nftables"
            why = "tc_nat_filter backend auto, which writes with %s here (act_nat: %s)" % (backend, how)
        result["nat_backend"] = backend
        if backend == "nftables":
            wanted.append(("nft", why))
        elif nat_persist:
            wanted.append(("tc", why + " and its boot unit (tc -batch)"))
    for item in wanted:
        name, why = item if isinstance(item, tuple) else (item, None)
        if name in found:
            continue
        found[name] = find(name)
        if found[name] is None:
            package, purpose = COMMANDS.get(name, (None, name))
            missing.append({"name": name, "package": package,
                            "reason": "no %s command in PATH or %s (%s)" % (name, SBIN, why or "for " + purpose)})
    if systemd:
        result["systemd"] = os.path.isdir(systemd_dir)
        if not result["systemd"]:
            missing.append({"name": "systemd", "package": "systemd",
                            "reason": "systemd is not the init system (no %s): the roles install and enable systemd units" % systemd_dir})
    result["missing"] = missing
    result["packages"] = sorted(set(m["package"] for m in missing if m["package"]))
    result["summary"] = summary(missing, result["packages"], executable)
    return result


def summary(missing, packages, executable):
    """One sentence for a refusal: what is missing and how to get it (empty when nothing is)."""
    if not missing:
        return ""
    text = "; ".join("%s: %s" % (m["name"], m["reason"]) for m in missing)
    text += ". Install the Debian package(s) %s (apt-get install %s)" % (", ".join(packages), " ".join(packages))
    if any(m["name"] == "pyroute2" for m in missing) and not re.match(r"^/usr/bin/python3(\.[0-9]+)?$", executable):
        text += ", or pyroute2 >= %s into %s (ansible_python_interpreter)" % (".".join(map(str, MIN_PYROUTE2)), executable)
    return text
