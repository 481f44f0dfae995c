# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""IPv4 reverse-path filtering (``net.ipv4.conf.<if>.rp_filter``): read, plan, apply, persist.

The kernel filters with ``max(conf.all.rp_filter, conf.<if>.rp_filter)``. With ``effective``
the plan makes the requested value the effective one: when ``all`` is higher than a requested
value, ``all`` is lowered and every interface not asked about (``default`` included) that was
relying on ``all`` is raised to the old ``all``, so its effective value does not change.

The managed sysctl.d file holds the settings (so they hold after a reboot) and, as comments,
the value each key had before the module first changed it and who needs the change: the
interface itself when it was requested, the requested interfaces relying on a lowered ``all``
for ``all``, and ``@all`` for the keys raised to compensate (restored together with ``all``).
``state=absent`` restores a key once nothing needs it any more.

/proc/sys/net is per network namespace. Nothing here imports Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import (
    Plan,
    ValidationError,
    check_ifname,
)
from ansible_collections.netops.ip_transparency.plugins.module_utils._transaction import Step, apply_steps, remove_file, write_file

CONF_ROOT = "/proc/sys/net/ipv4/conf"
DEFAULT_SYSCTL_FILE = "/etc/sysctl.d/60-netops-rp-filter.conf"
VALUES = {"off": 0, "strict": 1, "loose": 2, "0": 0, "1": 1, "2": 2}
NAMES = {0: "off", 1: "strict", 2: "loose"}
SPECIAL = ("all", "default")

HEADER = (
    "# Managed by netops.ip_transparency.rp_filter: reverse-path filtering (0 off, 1 strict, 2 loose).\n"
    "# The '# netops-original:' lines record each key's value before the module first changed it and\n"
    "# what still needs the change ('@all': raised while all is lowered); state=absent restores them.\n"
    "# Do not edit by hand.\n"
)
RECORD_PREFIX = "# netops-original:"
VIA_ALL = "@all"  # owner of keys raised while all was lowered: they are restored together with all


def parse_value(value):
    """``off``/``strict``/``loose`` or 0/1/2 -> 0/1/2 (YAML's unquoted ``off`` arrives as False)."""
    if value is False:
        return 0
    text = str(value).strip().lower()
    if text not in VALUES:
        raise ValidationError("value %r must be off, strict or loose (or 0, 1, 2)" % (value,))
    return VALUES[text]


def check_interface(name):
    """An interface name the kernel takes (check_ifname) that can also be written in a sysctl.d file (no '=')."""
    text = check_ifname("" if name is None else name, "interface")
    if "=" in text:
        raise ValidationError("interface %r cannot be written in a sysctl.d file (its '=' would split the key)" % (name,))
    return text


def sysctl_key(iface):
    """The sysctl.d key of an interface; names with dots (VLANs) need the slash form."""
    if "." in iface:
        return "net/ipv4/conf/%s/rp_filter" % iface
    return "net.ipv4.conf.%s.rp_filter" % iface


def iface_of_key(key):
    """Inverse of sysctl_key (None for keys that are not an rp_filter key)."""
    if "/" in key:
        parts = key.strip("/").split("/")
        if len(parts) == 5 and parts[:3] == ["net", "ipv4", "conf"] and parts[4] == "rp_filter":
            return parts[3]
        return None
    if key.startswith("net.ipv4.conf.") and key.endswith(".rp_filter"):
        middle = key[len("net.ipv4.conf."):-len(".rp_filter")]
        return middle if middle and "." not in middle else None
    return None


class Sysctl(object):
    """The rp_filter files of /proc/sys/net/ipv4/conf (``root`` is configurable for tests)."""

    def __init__(self, root=CONF_ROOT):
        self.root = root

    def interfaces(self):
        return sorted(name for name in os.listdir(self.root) if os.path.isfile(self._path(name)))

    def exists(self, iface):
        return os.path.isfile(self._path(iface))

    def _path(self, iface):
        return os.path.join(self.root, iface, "rp_filter")

    def read(self, iface):
        with open(self._path(iface)) as handle:
            return int(handle.read().strip())

    def read_all(self):
        return dict((name, self.read(name)) for name in self.interfaces())

    def write(self, iface, value):
        with open(self._path(iface), "w") as handle:
            handle.write("%d\n" % value)


def effective(current, iface):
    """The value the kernel applies on ``iface`` (``max(all, iface)``)."""
    if iface == "all":
        return current["all"]
    return max(current["all"], current[iface])


def compute_targets(requested, current, want_effective=True):
    """Return the full map iface -> value wanted, and the keys changed on behalf of the request.

    ``requested``: iface -> value; ``current``: every iface (with all/default) -> value.
    """
    target = dict(current)
    target.update(requested)
    if not want_effective:
        return target
    others = dict((i, v) for i, v in requested.items() if i != "all")
    old_all = current["all"]
    if others:
        lowest = min(others.values())
        if "all" in requested and requested["all"] > lowest:
            names = ", ".join("%s=%s" % (i, NAMES[v]) for i, v in sorted(others.items()) if v < requested["all"])
            raise ValidationError(
                "all=%s would override %s (the kernel uses the higher of all and the interface's value); "
                "with effective=true, all must not be higher than the interfaces' values" % (NAMES[requested["all"]], names)
            )
        if "all" not in requested and old_all > lowest:
            target["all"] = lowest
    if target["all"] < old_all:
        for iface, value in current.items():
            if iface != "all" and iface not in requested and value < old_all:
                target[iface] = old_all
    return target


def order_writes(changes, current):
    """Raise values first, lower them after, so nothing is ever filtered less than both before and after."""
    ups = sorted(i for i, v in changes.items() if v > current[i])
    downs = sorted((i for i, v in changes.items() if v < current[i]), key=lambda i: (i == "all", i))
    return ups + downs


class ManagedFile(object):
    """The sysctl.d file: settings lines and ``# netops-original:`` records."""

    def __init__(self, path):
        self.path = path
        self.records = {}  # iface -> {"original": int, "owners": set}
        self.settings = {}  # iface -> int
        self.other = []  # lines that are not ours, kept as they are
        self.exists = os.path.exists(path)
        if self.exists:
            with open(path) as handle:
                self.parse(handle.read())

    def parse(self, text):
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith(RECORD_PREFIX):
                self._parse_record(stripped[len(RECORD_PREFIX):])
            elif not stripped or stripped.startswith("#") or stripped.startswith(";"):
                continue
            elif "=" in stripped:
                key, value = [p.strip() for p in stripped.lstrip("-").split("=", 1)]
                iface = iface_of_key(key)
                if iface is not None and value in ("0", "1", "2"):
                    self.settings[iface] = int(value)
                else:
                    self.other.append(line)
            else:
                self.other.append(line)

    def _parse_record(self, text):
        # "<key> = <value> for <iface>[,<iface>...]"
        try:
            key_value, owners = text.split(" for ", 1)
            key, value = [p.strip() for p in key_value.split("=", 1)]
            iface = iface_of_key(key)
            number = int(value)
        except ValueError:
            return
        if iface is not None:
            self.records[iface] = {"original": number, "owners": set(o for o in owners.strip().split(",") if o)}

    def render(self):
        lines = [HEADER]
        for iface in sorted(self.records):
            record = self.records[iface]
            lines.append("%s %s = %d for %s\n" % (RECORD_PREFIX, sysctl_key(iface), record["original"], ",".join(sorted(record["owners"]))))
        # all first, then default, then the interfaces: the order sysctl applies them in
        for iface in sorted(self.settings, key=lambda i: (i not in SPECIAL, SPECIAL.index(i) if i in SPECIAL else 0, i)):
            lines.append("%s = %d\n" % (sysctl_key(iface), self.settings[iface]))
        lines.extend(line + "\n" for line in self.other)
        return "".join(lines)

    @property
    def empty(self):
        return not (self.records or self.settings or self.other)

    def content(self):
        """What the file should hold (None: the file should not exist)."""
        return None if self.empty else self.render()

    def current_content(self):
        if not self.exists:
            return None
        with open(self.path) as handle:
            return handle.read()

    def write(self):
        _put_file(self.path, self.content())


def normalise(params, sysctl):
    """Validate the module options; returns (state, requested iface -> value or None, options)."""
    state = params.get("state") or "present"
    interfaces = params.get("interfaces") or []
    if not interfaces:
        raise ValidationError("interfaces must name at least one interface (or all/default)")
    names = []
    for name in interfaces:
        name = check_interface(name)
        if name not in names:
            names.append(name)
    path = params.get("sysctl_file") or DEFAULT_SYSCTL_FILE
    if not os.path.isabs(path):
        raise ValidationError("sysctl_file %r must be an absolute path" % (path,))
    if state == "present":
        if params.get("value") is None:
            raise ValidationError("value is required with state=present")
        value = parse_value(params["value"])
        missing = [n for n in names if not sysctl.exists(n)]
        if missing:
            raise ValidationError(
                "unknown interface(s) %s: no %s/<name>/rp_filter in this network namespace" % (", ".join(missing), sysctl.root)
            )
        return state, dict((n, value) for n in names), path
    return state, dict((n, None) for n in names), path


def _values_report(current, ifaces):
    return dict(
        (i, {"configured": NAMES.get(current[i], str(current[i])), "effective": NAMES.get(effective(current, i), "")})
        for i in sorted(ifaces) if i in current
    )


def _lines(values, ifaces):
    return ["%s = %d" % (sysctl_key(i), values[i]) for i in sorted(ifaces, key=lambda i: (i not in SPECIAL, i)) if i in values]


def ensure(params, check_mode=False, sysctl=None):
    """The whole module run: returns the result dict (changed, diff, values, changed_keys, sysctl_file)."""
    sysctl = sysctl or Sysctl()
    state, requested, path = normalise(params, sysctl)
    current = sysctl.read_all()
    managed = ManagedFile(path)
    old_content = managed.current_content()
    persist = params.get("persist", True)
    want_effective = params.get("effective", True)

    if state == "present":
        target = compute_targets(requested, current, want_effective)
        changes = dict((i, v) for i, v in target.items() if v != current[i])
        relying = set(i for i in requested if i != "all")
        for iface in set(changes) | set(requested):
            record = managed.records.setdefault(iface, {"original": current[iface], "owners": set()})
            if iface in requested:
                record["owners"].add(iface)
            elif iface == "all":
                record["owners"] |= relying
            else:
                # raised so that lowering all changes nothing for it: goes back together with all
                record["owners"].add(VIA_ALL)
            if persist:
                managed.settings[iface] = target[iface]
            else:
                managed.settings.pop(iface, None)
        if want_effective and relying and "all" in managed.records:
            managed.records["all"]["owners"] |= relying
    else:
        changes = {}
        for record in managed.records.values():
            record["owners"] -= set(requested)
        if not managed.records.get("all", {"owners": ()})["owners"]:
            for record in managed.records.values():
                record["owners"].discard(VIA_ALL)
        for iface in sorted(managed.records):
            record = managed.records[iface]
            if record["owners"]:
                continue
            del managed.records[iface]
            managed.settings.pop(iface, None)
            if iface in current and current[iface] != record["original"]:
                changes[iface] = record["original"]
        for iface in requested:
            if iface not in managed.records:
                managed.settings.pop(iface, None)

    new_content = managed.content()
    file_changed = new_content != old_content
    after = dict(current)
    after.update(changes)
    shown = set(requested) | set(changes) | {"all"}
    the_plan = Plan(_lines(current, shown), _lines(after, shown), to_add=sorted(changes))
    changed = the_plan.changed or file_changed

    if changed and not check_mode:
        apply(sysctl, changes, current, managed)

    diff = the_plan.diff()
    if file_changed:
        diff["before_header"] = diff["after_header"] = "rp_filter (and %s)" % path
        diff["before"] += "# %s:\n%s" % (path, old_content or "(absent)\n")
        diff["after"] += "# %s:\n%s" % (path, new_content or "(absent)\n")
    return {
        "changed": changed,
        "diff": diff,
        "values": _values_report(after, set(requested) | set(changes) | {"all"}),
        "changed_keys": [sysctl_key(i) for i in order_writes(changes, current)],
        "sysctl_file": path,
    }


def write_values(sysctl, changes, current):
    """Write ``changes`` over ``current``; returns the interfaces written.

    Writing conf/default makes the kernel copy the value to every device whose rp_filter was
    never written explicitly, so default goes first and the devices it moved are put back.
    """
    wanted = dict(current)
    wanted.update(changes)
    order = order_writes(changes, current)
    if "default" in order:
        order.remove("default")
        order.insert(0, "default")
    written = []
    for iface in order:
        sysctl.write(iface, changes[iface])
        written.append(iface)
    if "default" in changes:
        for iface, value in sorted(sysctl.read_all().items()):
            if iface in wanted and value != wanted[iface]:
                sysctl.write(iface, wanted[iface])
                written.append(iface)
    return written


def apply(sysctl, changes, current, managed):
    """Write the kernel values, then the file, in one transaction: on failure the values read before are put back
    (those already written by a half-done step too) and the file keeps its old content."""
    old_content = managed.current_content()

    def restore_values():
        now = sysctl.read_all()
        write_values(sysctl, dict((i, v) for i, v in current.items() if i in now and now[i] != v), now)

    steps = []
    if changes:
        line = "setting %s" % ", ".join("%s = %d" % (sysctl_key(i), changes[i]) for i in order_writes(changes, current))
        steps.append(Step(line, lambda: write_values(sysctl, changes, current), restore_values, partial=True))
    steps.append(Step("writing %s" % managed.path, managed.write, lambda: _put_file(managed.path, old_content)))
    apply_steps(steps)


def _put_file(path, content):
    """``path`` with ``content``, or no file for None."""
    if content is None:
        remove_file(path)
    else:
        write_file(path, content)
