# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""What the running kernel offers tc_nat_filter: whether it can run the tc ``nat`` action (act_nat).

Reads files only (nothing is loaded or created), so that check mode and ``backend: auto`` stay side-effect free.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import gzip
import os
import re

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ReadError

ACT_NAT_MODULE = re.compile(r"(^|/)act_nat\.ko(\.[a-z0-9]+)?$")


def act_nat_support(release=None, proc="/proc", modules_root="/lib/modules", boot="/boot"):
    """Whether this kernel can run the tc ``nat`` action: (bool, how we know). Reads files only.

    In order: act_nat loaded (/proc/modules); the kernel's config (/proc/config.gz or
    /boot/config-<release>: ``CONFIG_NET_ACT_NAT`` =y built in, =m module, unset absent);
    modules.builtin and modules.dep of /lib/modules/<release> (a module the kernel loads on
    demand, as tc's first nat filter does); last, /proc/kallsyms for a built-in tcf_nat_act.
    Nothing is loaded or created: check mode and ``auto`` stay side-effect free.
    """
    if release is None:
        release = os.uname()[2]
    modules = _read(os.path.join(proc, "modules"))
    if modules and re.search(r"^act_nat\s", modules, re.M):
        return True, "act_nat is loaded (%s/modules)" % proc
    config, config_path = _kernel_config(release, proc, boot)
    moddir = os.path.join(modules_root, release)
    if config is not None:
        match = re.search(r"^CONFIG_NET_ACT_NAT=([ym])", config, re.M)
        if not match:
            return False, "CONFIG_NET_ACT_NAT is not set in %s" % config_path
        if match.group(1) == "y":
            return True, "CONFIG_NET_ACT_NAT=y in %s" % config_path
        found = _module_file(moddir)
        if found:
            return True, "CONFIG_NET_ACT_NAT=m in %s and %s" % (config_path, found)
        return False, "CONFIG_NET_ACT_NAT=m in %s but no act_nat module under %s" % (config_path, moddir)
    builtin = _read(os.path.join(moddir, "modules.builtin"))
    if builtin and any(ACT_NAT_MODULE.search(line.strip()) for line in builtin.splitlines()):
        return True, "act_nat is built in (%s/modules.builtin)" % moddir
    found = _module_file(moddir)
    if found:
        return True, "act_nat module %s" % found
    if _kallsyms_has(os.path.join(proc, "kallsyms"), "tcf_nat_act"):
        return True, "tcf_nat_act is in %s/kallsyms" % proc
    return False, "no act_nat: not loaded, not built in, no module under %s, no kernel config found" % moddir


def _read(path):
    """The text of ``path``; None when it does not exist. Any other failure is a ReadError: a file that is there but
    cannot be read says nothing about act_nat."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rt") as handle:
                return handle.read()
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        if getattr(exc, "errno", None) in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise ReadError("reading %s failed: %s" % (path, exc))


def _kernel_config(release, proc, boot):
    for path in (os.path.join(proc, "config.gz"), os.path.join(boot, "config-%s" % release)):
        text = _read(path)
        if text is not None:
            return text, path
    return None, None


def _module_file(moddir):
    dep = _read(os.path.join(moddir, "modules.dep"))
    if not dep:
        return None
    for line in dep.splitlines():
        name = line.split(":", 1)[0].strip()
        if ACT_NAT_MODULE.search(name):
            path = name if os.path.isabs(name) else os.path.join(moddir, name)
            if os.path.exists(path):
                return path
    return None


def _kallsyms_has(path, symbol):
    text = _read(path) or ""
    return any(len(fields) >= 3 and fields[2] == symbol for fields in (line.split() for line in text.splitlines()))
