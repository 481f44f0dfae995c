# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""Shared pieces of the collection's modules: domain errors, the pyroute2 import guard,
address normalisation and the plan (before/after/diff) every state module reports.

Nothing here talks to Ansible: module_utils raise the errors below and the modules turn
them into ``fail_json``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import ipaddress
import os
import sys
import traceback

try:
    # Re-exported: the module_utils take IPRoute and NetlinkError from here, behind one guard.
    from pyroute2 import IPRoute  # noqa: F401 pylint: disable=unused-import
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: F401 pylint: disable=unused-import

    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised where pyroute2 is absent
    IPRoute = None
    NetlinkError = OSError
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = traceback.format_exc()


def c_locale_env():
    """The environment for a command whose output or errors are parsed: messages in the C locale, whatever the host's."""
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    return env


class NetopsError(Exception):
    """Base of the collection's domain errors."""


class ValidationError(NetopsError):
    """The input is wrong. Raised before anything is changed."""


class KernelFeatureError(NetopsError):
    """The running kernel lacks something the request needs. Raised before anything is changed."""


class ReadError(NetopsError):
    """Reading the current state failed (not "it does not exist": that is an answer). Raised before any change."""


class ApplyError(NetopsError):
    """Applying failed half-way. ``rolled_back`` tells whether what was applied was undone; what was not
    undone is still a change of the host (``changed``), which the failed task must report."""

    def __init__(self, msg, rolled_back=False):
        super(ApplyError, self).__init__(msg)
        self.rolled_back = rolled_back

    @property
    def changed(self):
        return not self.rolled_back


def parse_address(value, what="address"):
    """Return an ``ipaddress`` address for ``value`` or raise ValidationError."""
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise ValidationError("%s %r is not an IPv4 or IPv6 address" % (what, value))


def parse_prefix(value, what="prefix", strict=True):
    """Return an ``ipaddress`` network for ``value`` (an address means a host prefix).

    With ``strict``, host bits set are refused with a hint at the intended prefix, as
    ``172.16.0.1/24`` is ambiguous: a host or the network 172.16.0.0/24.
    """
    text = str(value).strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValidationError("%s %r is not an IPv4 or IPv6 address or prefix" % (what, value))
        if strict:
            raise ValidationError(
                "%s %r has host bits set: write %s for the network or %s/%d for the host"
                % (what, value, loose, text.split("/", maxsplit=1)[0], loose.max_prefixlen)
            )
        return loose


def same_family(items, what="addresses"):
    """Raise ValidationError unless every address/network in ``items`` has one IP version.

    Returns that version (4 or 6), or None for an empty list.
    """
    versions = set(item.version for item in items if item is not None)
    if len(versions) > 1:
        raise ValidationError("%s mix IPv4 and IPv6: %s" % (what, ", ".join(str(i) for i in items if i is not None)))
    return versions.pop() if versions else None


def check_range(value, low, high, what):
    """Raise ValidationError unless ``low <= value <= high``; returns ``int(value)``."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValidationError("%s %r is not a number" % (what, value))
    if not low <= number <= high:
        raise ValidationError("%s %d is out of range %d-%d" % (what, number, low, high))
    return number


IFNAMSIZ = 16  # the kernel's buffer for a device name, its NUL included
# isspace() of the kernel's lib/ctype.c: the ASCII white space and byte 0xa0
KERNEL_SPACES = frozenset(bytearray(b" \t\n\v\f\r\xa0"))


def check_ifname(name, what="interface"):
    """Return ``name`` when the kernel would take it as a device name, else raise ValidationError.

    The rules of the kernel's ``dev_valid_name()`` (net/core/dev.c), on the UTF-8 bytes of the name:
    1 to IFNAMSIZ - 1 (15) bytes, not ``.`` or ``..``, no ``/``, no ``:`` and no white space (as the
    kernel's isspace(), which counts byte 0xa0). A NUL would cut the name short, so it is refused too.
    ``all`` and ``default`` pass: they are valid names (and rp_filter's sysctl directories).
    None (an option not given) is returned as is; whether the device exists is checked later.
    """
    if name is None:
        return None
    text = str(name)
    raw = bytearray(text.encode("utf-8"))
    problem = None
    if not raw:
        problem = "it is empty"
    elif len(raw) >= IFNAMSIZ:
        problem = "it is %d bytes long, the kernel takes at most %d" % (len(raw), IFNAMSIZ - 1)
    elif text in (".", ".."):
        problem = "'.' and '..' are reserved"
    else:
        bad = sorted(set(chr(b) for b in raw if b in KERNEL_SPACES or b in bytearray(b"/:\0")))
        if bad:
            problem = "it contains %s" % ", ".join(repr(c) for c in bad)
    if problem:
        raise ValidationError(
            "%s %r is not a valid interface name: %s (1-15 bytes, no '/', ':' or white space, not '.' or '..')"
            % (what, name, problem)
        )
    return text


def interface_index(ipr, name):
    """Return the ifindex of device ``name`` through an open IPRoute, or raise ValidationError."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise ValidationError("unknown interface %r: no such device on this host" % name)
    return found[0]


def interface_names(ipr):
    """Map ifindex -> name for every link, through an open IPRoute."""
    return dict((link["index"], link.get_attr("IFLA_IFNAME")) for link in ipr.get_links())


class Plan(object):
    """The difference between what is and what is wanted, as rendered lines.

    ``before`` and ``after`` are lists of one-line renderings (iproute2/nft-like text) of the
    objects a module owns; ``to_add`` and ``to_remove`` are the objects to change, or ``steps``
    the changes themselves (_transaction.Step objects, applied with _transaction.apply_steps).
    """

    def __init__(self, before, after, to_add=(), to_remove=(), steps=()):
        self.before = list(before)
        self.after = list(after)
        self.to_add = list(to_add)
        self.to_remove = list(to_remove)
        self.steps = list(steps)

    @property
    def changed(self):
        return bool(self.to_add or self.to_remove or self.steps)

    def diff(self):
        """Ansible's diff dict: readable before/after text."""
        return {
            "before": "".join(line + "\n" for line in self.before),
            "after": "".join(line + "\n" for line in self.after),
        }


def error_cause(exc):
    """The cause of an unexpected error in words: path, strerror and errno of an OSError, code and
    strerror of a netlink error (pyroute2's NetlinkError), else the exception's type and text."""
    number = getattr(exc, "errno", None) if isinstance(exc, EnvironmentError) else getattr(exc, "code", None)
    if isinstance(number, int) and number > 0:
        text = getattr(exc, "strerror", None) or os.strerror(number)
        name = errno.errorcode.get(number, "?")
        if isinstance(exc, EnvironmentError):
            path = getattr(exc, "filename", None)
            return "%s%s (errno %d, %s)" % ("%s: " % path if path else "", text, number, name)
        return "netlink error %d (%s): %s" % (number, name, text)
    return "%s: %s" % (type(exc).__name__, exc)


def error_site(tb):
    """Where an error was raised, as ``file line N (function)``: the innermost frame of this collection's
    plugins (the code that made the failing call), else the innermost frame."""
    frames = []
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    if not frames:
        return "unknown place"
    ours = [frame for frame in frames if "/netops/ip_transparency/" in frame[0].co_filename.replace(os.sep, "/")]
    code, line = (ours or frames)[-1]
    return "%s line %d (%s)" % (os.path.basename(code.co_filename), line, getattr(code, "co_qualname", code.co_name).replace("<locals>.", ""))


def outcome(action, diff):
    """Run ``action()`` (a module's work) and say how the module should end.

    Returns ``(True, result)`` for ``exit_json`` or ``(False, failure)`` for ``fail_json``: domain
    errors become a message (with ``rolled_back`` for an ApplyError); any other error (an OSError from
    /proc or a file, a netlink error, a bug) becomes a message naming where it happened and its cause
    (errno/strerror, netlink code), with the traceback in ``exception``. The ``diff`` key is kept only
    when Ansible asked for one. Deciding here keeps the modules free of the same try/except.
    """
    try:
        result = action()
    except ApplyError as exc:
        return False, {"msg": str(exc), "rolled_back": exc.rolled_back, "changed": exc.changed}
    except NetopsError as exc:
        return False, {"msg": str(exc)}
    except Exception as exc:  # pylint: disable=broad-except
        # nothing above caught it: name it, so that the module fails cleanly rather than with a raw traceback
        return False, {
            "msg": "unexpected error in %s: %s" % (error_site(sys.exc_info()[2].tb_next), error_cause(exc)),
            "exception": traceback.format_exc(),
        }
    if not diff:
        result.pop("diff", None)
    return True, result
