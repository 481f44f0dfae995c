# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Netlink helpers shared by the rule and route module_utils.

Routing table names (``main`` == 254, names from ``/etc/iproute2/rt_tables``), address families,
numeric parsing (``"0x1"`` == 1), reading attributes of pyroute2 messages in a way that works with
pyroute2 0.7 and 0.9, and the undo log the modules use to roll back a half-applied change (_transaction's engine).

Nothing here imports Ansible or pyroute2 (pyroute2 messages are only duck-typed).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os
import socket

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import (
    ValidationError,
    check_range,
)
from ansible_collections.netops.ip_transparency.plugins.module_utils._transaction import Transaction

AF_BY_VERSION = {4: socket.AF_INET, 6: socket.AF_INET6}
VERSION_BY_AF = {socket.AF_INET: 4, socket.AF_INET6: 6}
VERSION_BY_NAME = {"ipv4": 4, "ipv6": 6}
NAME_BY_VERSION = {4: "ipv4", 6: "ipv6"}

U32_MAX = 0xFFFFFFFF

# The kernel's reserved tables; iproute2 knows them by these names.
RESERVED_TABLES = {"unspec": 0, "compat": 252, "default": 253, "main": 254, "local": 255}
TABLE_NAMES = {253: "default", 254: "main", 255: "local"}

RT_TABLES_FILES = (
    "/etc/iproute2/rt_tables",
    "/usr/share/iproute2/rt_tables",
    "/usr/lib/iproute2/rt_tables",
)
RT_TABLES_DIRS = ("/etc/iproute2/rt_tables.d", "/usr/share/iproute2/rt_tables.d")


def read_rt_tables(files=RT_TABLES_FILES, dirs=RT_TABLES_DIRS):
    """Map table name -> id from iproute2's ``rt_tables`` files (missing files are fine)."""
    paths = list(files)
    for folder in dirs:
        paths.extend(sorted(glob.glob(os.path.join(folder, "*.conf"))))
    names = {}
    for path in paths:
        try:
            with open(path) as handle:
                lines = handle.read().splitlines()
        except (IOError, OSError):
            continue
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            try:
                number = int(fields[0], 0)
            except ValueError:
                continue
            names.setdefault(fields[1], number)
    return names


def parse_u32(value, what, low=0, high=U32_MAX):
    """Parse an integer given as int or decimal/hex string (``1``, ``"1"``, ``"0x1"``)."""
    if isinstance(value, bool):
        raise ValidationError("%s %r is not a number" % (what, value))
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().lower()
        try:
            number = int(text, 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            raise ValidationError("%s %r is not a number (write it in decimal or as 0x...)" % (what, value))
    return check_range(number, low, high, what)


def parse_table(value, rt_tables=None):
    """Return the routing table id for ``value``: a number 1..4294967295 or a table name."""
    if value is None:
        return RESERVED_TABLES["main"]
    text = str(value).strip()
    if text in RESERVED_TABLES:
        number = RESERVED_TABLES[text]
    elif text.lower().startswith("0x") or text.isdigit() or isinstance(value, int):
        number = parse_u32(value, "table")
    else:
        names = read_rt_tables() if rt_tables is None else rt_tables
        if text not in names:
            raise ValidationError(
                "table %r is neither a number (1-4294967295) nor a name known to iproute2 "
                "(main, local, default or a name in /etc/iproute2/rt_tables)" % (value,)
            )
        number = names[text]
    if number == 0:
        raise ValidationError("table 0 (unspec) is not a routing table: use 1-4294967295, main, local or default")
    return check_range(number, 1, U32_MAX, "table")


def table_name(number):
    """Render a table id as iproute2 does for the reserved ones."""
    return TABLE_NAMES.get(number, str(number))


def parse_family(value):
    """``ipv4``/``ipv6``/None -> 4/6/None."""
    if value is None:
        return None
    if value not in VERSION_BY_NAME:
        raise ValidationError("family %r must be ipv4 or ipv6" % (value,))
    return VERSION_BY_NAME[value]


def attr(msg, name, default=None):
    """A netlink attribute of a pyroute2 message (works alike on pyroute2 0.7 and 0.9)."""
    value = msg.get_attr(name)
    return default if value is None else value


def attr_names(msg):
    """The names of the attributes a pyroute2 message carries."""
    names = []
    for item in msg.get("attrs", ()):
        names.append(item[0] if isinstance(item, (list, tuple)) else getattr(item, "name", str(item)))
    return names


def msg_table(msg, attr_name):
    """The table of a route/rule message: the 32-bit attribute when present, else the header byte."""
    value = msg.get_attr(attr_name)
    return msg["table"] if value is None else value


# The undo log of the rule and route modules is the collection's one transaction engine:
# ``run(description, do, undo)`` performs ``do()``; if it raises, every earlier change is reverted
# in reverse order and ApplyError(rolled_back=...) is raised.
UndoLog = Transaction


def converge(params, normalise, prepare, read, plan, apply, check_mode):
    """The read -> normalise -> plan -> apply cycle of the rule and route modules.

    ``normalise(params)`` -> want; ``prepare(want)`` runs for ``state: present`` only (resolving
    devices, which must exist to add but not to remove); ``read(want)`` -> the kernel's objects;
    ``plan(want, existing, state)`` -> a Plan; ``apply(plan, want)`` changes the kernel.
    Returns ``(want, state, existing, plan, current)``: ``current`` is the kernel read back after
    applying, None when nothing was applied (no change, or check mode).
    """
    want = normalise(params)
    state = params.get("state") or "present"
    if state == "present":
        prepare(want)
    existing = read(want)
    the_plan = plan(want, existing, state)
    current = None
    if the_plan.changed and not check_mode:
        apply(the_plan, want)
        current = read(want)
    return want, state, existing, the_plan, current


def add_or_delete(log, command, noun, obj, call, restore="add"):
    """One undoable netlink change in ``log``: ``command`` "add" or "append" (undone by "del") or "del"
    (undone by ``restore``) of ``obj`` (a rule or route with ``netlink_args()`` and ``render()``) through ``call``
    (``ipr.rule`` or ``ipr.route``). Routes restore with "append": a deleted route may have shared its
    key with another (``ip route append``), and adding it back would be refused with File exists."""
    args = obj.netlink_args()
    undo = restore if command == "del" else "del"
    log.run("%s %s '%s'" % ({"add": "adding", "append": "appending"}.get(command, "deleting"), noun, obj.render()),
            lambda: call(command, **args),
            lambda: call(undo, **args))
