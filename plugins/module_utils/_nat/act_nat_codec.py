# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""The tc ``nat`` action (the kernel's act_nat): encoder and decoder.

pyroute2 knows gact, mirred, police, bpf, connmark, skbedit and vlan, not ``nat``. This module
carries the codec, written after the kernel's ``include/uapi/linux/tc_act/tc_nat.h``::

    enum { TCA_NAT_UNSPEC, TCA_NAT_PARMS, TCA_NAT_TM, TCA_NAT_PAD };
    #define TCA_NAT_FLAG_EGRESS 1
    struct tc_nat {
        tc_gen;            /* __u32 index, __u32 capab, int action, int refcnt, int bindcnt */
        __be32 old_addr;
        __be32 new_addr;
        __be32 mask;
        __u32 flags;
    };

Two layers:

- ``encode_parms``/``decode_parms``: ``struct tc_nat`` to and from bytes, with nothing but the
  standard library, so the unit tests can compare them with what iproute2's ``tc`` sends; the tc
  backend decodes dumped filters with ``decode_parms``;
- ``options``/``parms_fields`` (when pyroute2 is importable): the same layout as a pyroute2 NLA, which
  the tc backend's filter messages carry as their action's options. Nothing is registered in pyroute2.

The kernel's semantics (net/sched/act_nat.c), which decide how rules can be expressed: a packet
whose source (egress) or destination (ingress) address ``addr`` satisfies
``(addr ^ old) & mask == 0`` gets ``(new & mask) | (addr & ~mask)``, with the IP and the TCP/UDP/ICMP
checksums fixed. With a prefix shorter than /32 the host bits are kept: a prefix maps onto a
prefix, never many addresses onto one. IPv4 only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import struct

TCA_NAT_UNSPEC = 0
TCA_NAT_PARMS = 1
TCA_NAT_TM = 2
TCA_NAT_PAD = 3

TCA_NAT_FLAG_EGRESS = 1

# struct tc_nat: tc_gen in host order, the three addresses in network order, flags in host order
PARMS_FORMAT = "=IIiii4s4s4sI"
PARMS_SIZE = struct.calcsize(PARMS_FORMAT)  # 36

# the control actions (TC_ACT_*) tc accepts after an action; "continue" is TC_ACT_UNSPEC
CONTROLS = {
    "continue": -1,
    "ok": 0,
    "reclassify": 1,
    "drop": 2,
    "pipe": 3,
    "stolen": 4,
    "queued": 5,
    "repeat": 6,
    "redirect": 7,
    "trap": 8,
}
CONTROL_NAMES = dict((value, name) for name, value in CONTROLS.items())
CONTROL_NAMES[0] = "pass"  # tc prints TC_ACT_OK as "pass"


def _control(value):
    if isinstance(value, str):
        key = "ok" if value == "pass" else value
        if key not in CONTROLS:
            raise ValueError("unknown control action %r (one of %s)" % (value, ", ".join(sorted(CONTROLS))))
        return CONTROLS[key]
    return int(value)


def _old_network(old):
    network = ipaddress.ip_network(str(old), strict=False) if not isinstance(old, ipaddress.IPv4Network) else old
    if network.version != 4:
        raise ValueError("the tc nat action is IPv4-only, got %s" % network)
    return network


def encode_parms(old, new, direction="egress", control="ok", index=0, capab=0, refcnt=0, bindcnt=0):
    """``struct tc_nat`` as bytes, as ``tc ... action nat <direction> <old> <new> <control>`` builds it.

    ``old`` is an IPv4 address or prefix (its length is the mask), ``new`` an IPv4 address;
    ``direction`` is ``egress`` (rewrite the source) or ``ingress`` (the destination).
    """
    network = _old_network(old)
    new_addr = ipaddress.ip_address(str(new))
    if new_addr.version != 4:
        raise ValueError("the tc nat action is IPv4-only, got %s" % new_addr)
    if direction not in ("egress", "ingress"):
        raise ValueError("direction must be egress or ingress, got %r" % (direction,))
    flags = TCA_NAT_FLAG_EGRESS if direction == "egress" else 0
    return struct.pack(
        PARMS_FORMAT,
        index,
        capab,
        _control(control),
        refcnt,
        bindcnt,
        network.network_address.packed,
        new_addr.packed,
        network.netmask.packed,
        flags,
    )


def decode_parms(data):
    """Decode ``struct tc_nat`` bytes into a dict: old (IPv4Network), new, direction, control, index, ..."""
    data = bytes(data)
    if len(data) < PARMS_SIZE:
        raise ValueError("struct tc_nat is %d bytes, got %d" % (PARMS_SIZE, len(data)))
    index, capab, action, refcnt, bindcnt, old, new, mask, flags = struct.unpack(PARMS_FORMAT, data[:PARMS_SIZE])
    netmask = ipaddress.IPv4Address(mask)
    prefixlen = bin(int(netmask)).count("1")
    old_network = ipaddress.IPv4Network("%s/%d" % (ipaddress.IPv4Address(int(ipaddress.IPv4Address(old)) & int(netmask)), prefixlen))
    return {
        "index": index,
        "capab": capab,
        "control": CONTROL_NAMES.get(action, str(action)),
        "action": action,
        "refcnt": refcnt,
        "bindcnt": bindcnt,
        "old": old_network,
        "new": ipaddress.IPv4Address(new),
        "mask": str(netmask),
        "direction": "egress" if flags & TCA_NAT_FLAG_EGRESS else "ingress",
        "flags": flags,
    }


# --- pyroute2 -----------------------------------------------------------------------------------

try:
    from pyroute2.netlink import NLA_F_NESTED, nla

    HAS_PYROUTE2 = True
except ImportError:  # pragma: no cover - exercised where pyroute2 is absent
    HAS_PYROUTE2 = False


if HAS_PYROUTE2:

    class options(nla):
        """TCA_ACT_OPTIONS of a ``nat`` action, for pyroute2 (tc sends it with NLA_F_NESTED)."""

        nla_flags = NLA_F_NESTED
        nla_map = (
            ("TCA_NAT_UNSPEC", "none"),
            ("TCA_NAT_PARMS", "tca_nat_parms"),
            ("TCA_NAT_TM", "tca_nat_tm"),
            ("TCA_NAT_PAD", "hex"),
        )

        class tca_nat_parms(nla):
            fields = (
                ("index", "I"),
                ("capab", "I"),
                ("action", "i"),
                ("refcnt", "i"),
                ("bindcnt", "i"),
                ("old_addr", ">I"),
                ("new_addr", ">I"),
                ("mask", ">I"),
                ("flags", "I"),
            )

        class tca_nat_tm(nla):
            # struct tcf_t
            fields = (
                ("install", "Q"),
                ("lastuse", "Q"),
                ("expires", "Q"),
                ("firstuse", "Q"),
            )


def parms_fields(old, new, direction="egress", control="ok"):
    """The fields of ``options.tca_nat_parms`` (integers), from the same arguments as ``encode_parms``."""
    fields = struct.unpack(PARMS_FORMAT, encode_parms(old, new, direction, control))
    names = ("index", "capab", "action", "refcnt", "bindcnt", "old_addr", "new_addr", "mask", "flags")
    result = dict(zip(names, fields))
    for name in ("old_addr", "new_addr", "mask"):
        result[name] = struct.unpack(">I", result[name])[0]
    return result
