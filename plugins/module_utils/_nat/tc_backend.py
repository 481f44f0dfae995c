# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""tc backend of tc_nat_filter: a root htb qdisc and u32 filters with the ``nat`` action, over netlink.

Layout on the device (``tc`` words; d5 as in DSR)::

    qdisc htb d5: root default d5d5                                   # only when the root was the kernel's default
    filter parent d5: protocol ip prio 1 handle d5: u32 divisor 256   # the module's hash table
    filter parent d5: protocol ip prio 1 handle ::1 u32 match ip dst 172.16.0.1/32 action gact pass    # exclude_destinations
    filter parent d5: protocol ip prio 1 u32 link d5: hashkey mask 0x000000ff at 12 match u32 0 0
    filter parent d5: protocol ip prio 1 u32 ht d5:b: match ip src 172.16.0.11/32 match ip protocol 17 0xff
        match ip sport 53 0xffff action nat egress 172.16.0.11/32 192.168.99.10 continue

- Lookup cost: one link filter hashes the last octet of the source address into 256 buckets;
  a packet is compared with the upstreams of its bucket only, not with every upstream.
- One filter per upstream address: the nat action rewrites ``(new & mask) | (addr & ~mask)``,
  so a many-to-one rewrite needs the full mask. A prefix rule expands to its addresses
  (at most 256 per rule, see tc_nat_filter.TC_MAX_ADDRESSES_PER_RULE), each in its bucket.
- The actions end in ``continue``: a rewritten packet goes on to the qdisc's other filters as
  if ours were not there, so the filters never change how a qdisc classifies.
- Excluded destinations (``exclude_destinations``): one pass filter per prefix (``match ip dst``,
  ``action gact pass``) in prio 1's root hash table with node ids 1..7ff. u32 tries the nodes of a
  table in node id order and the link has 800 (the first id the kernel hands out), so a packet to an
  excluded destination ends the classification before it reaches the hash table of the nat filters:
  one test per excluded prefix per packet. A prio cannot precede prio 1, and the nat filters stay
  where earlier versions put them. ``pass`` (TC_ACT_OK) ends the qdisc's classification: on the
  module's htb that means sent directly, as any unclassified packet; on a qdisc the module did not
  create it would change its classification, so exclusions are refused there.
- Ownership: the root qdisc is the module's when it is an htb with handle d5: and default
  class d5d5 (a class that never exists: unclassified traffic is sent directly, as with
  default 0). A root qdisc with handle 0 is the kernel's default and is replaced (deleting
  ours brings the default back). Any other root qdisc is foreign: refused, or with
  ``foreign_qdisc: attach`` and a classful kind, the filters are added to it and it is never
  deleted. The filters are the module's when they sit at prio 1, protocol ip, in hash table d5:
  or link to it; anything else at that prio is foreign and the module refuses to share it.

Messages are built with pyroute2's netlink classes, the nat action's options with act_nat_codec's; requests go
through pyroute2's public nlm_request_batch; filters are read back from its dumps, whose raw bytes are decoded here
(pyroute2's own u32 selector decoder misreads the keys).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import errno
import ipaddress
import socket
import struct
import time

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import NetlinkError, Plan, ReadError, ValidationError
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat import act_nat_codec
from ansible_collections.netops.ip_transparency.plugins.module_utils._nat.model import IPPROTO, Rule, collapse, collapse_networks
from ansible_collections.netops.ip_transparency.plugins.module_utils._transaction import Step

try:
    from pyroute2.netlink import NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, nla, nlmsg

    HAS_NETLINK = True
except ImportError:  # pragma: no cover - exercised where pyroute2 is absent
    HAS_NETLINK = False
    NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 1, 4, 0x200, 0x400

RTM_NEWQDISC = 36
RTM_DELQDISC = 37
RTM_NEWTFILTER = 44
RTM_DELTFILTER = 45

TC_H_ROOT = 0xFFFFFFFF
ETH_P_IP = 0x0800
TC_U32_TERMINAL = 1

OWN_QDISC = 0x00D50000  # d5:
OWN_HTB_DEFAULT = 0xD5D5
OWN_PRIO = 1
OWN_HTID = 0x0D500000  # u32 hash table d5:
DIVISOR = 256
FIRST_NODE = 0x800  # where tc's own node ids start
ATTACHABLE = ("htb", "prio", "hfsc", "drr", "ets", "qfq")

# u32 keys (mask, value offset) of a leaf, as tc's "match ip src/protocol/sport" packs them
KEY_SRC = (0xFFFFFFFF, 12)
KEY_PROTO = (0x00FF0000, 8)
KEY_SPORT = (0xFFFF0000, 20)
KEY_DST_OFFSET = 16  # "match ip dst": the key's mask is the prefix's

TCA_GACT_PARMS = 2
GACT_PARMS_FORMAT = "=IIiii"  # struct tc_gact: tc_gen (index, capab, action, refcnt, bindcnt)
TC_ACT_OK = 0

FLAGS_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
FLAGS_DELETE = NLM_F_REQUEST | NLM_F_ACK

Leaf = collections.namedtuple("Leaf", "src protocol sport nat_to control handle")
Pass = collections.namedtuple("Pass", "dst handle")  # an excluded destination prefix and its filter's handle


# --- message encoding -----------------------------------------------------------------------------


def fmt_htid(htid):
    return "%x:" % (htid >> 20)


def fmt_handle(handle):
    """tc's words for a u32 handle: ``d5:b:800``."""
    return "%x:%x:%x" % (handle >> 20, (handle >> 12) & 0xFF, handle & 0xFFF)


def fmt_qdisc(handle):
    return "%x:" % (handle >> 16)


def bucket_of(address):
    return int(address) & 0xFF


def filter_info(prio=OWN_PRIO, protocol=ETH_P_IP):
    """tcm_info of a filter: prio in the high half, the protocol in network order in the low half."""
    return ((prio << 16) & 0xFFFF0000) | socket.htons(protocol)


def pack_sel(keys, flags=0, hmask=0, hoff=0):
    """``struct tc_u32_sel`` and its keys; ``keys`` are (mask, value, offset) triples."""
    data = struct.pack("=BBBx", flags, 0, len(keys)) + struct.pack(">H", 0) + struct.pack("=Hhh", 0, 0, hoff) + struct.pack(">I", hmask)
    for mask, value, offset in keys:
        data += struct.pack(">II", mask, value & mask) + struct.pack("=ii", offset, 0)
    return data


def unpack_sel(data):
    flags, offshift, nkeys = struct.unpack_from("=BBB", data, 0)
    hoff = struct.unpack_from("=h", data, 10)[0]
    hmask = struct.unpack_from(">I", data, 12)[0]
    keys = []
    for i in range(nkeys):
        base = 16 + 16 * i
        mask, value = struct.unpack_from(">II", data, base)
        offset, offmask = struct.unpack_from("=ii", data, base + 8)
        keys.append((mask, value, offset, offmask))
    return {"flags": flags, "offshift": offshift, "hoff": hoff, "hmask": hmask, "keys": keys}


def leaf_keys(src, protocol, sport):
    return [
        (KEY_SRC[0], int(src), KEY_SRC[1]),
        (KEY_PROTO[0], IPPROTO[protocol] << 16, KEY_PROTO[1]),
        (KEY_SPORT[0], sport << 16, KEY_SPORT[1]),
    ]


if HAS_NETLINK:

    _TCMSG_FIELDS = (
        ("family", "B"),
        ("pad1", "B"),
        ("pad2", "H"),
        ("index", "i"),
        ("handle", "I"),
        ("parent", "I"),
        ("info", "I"),
    )

    class tc_plain_msg(nlmsg):
        """A tcmsg with a kind and no options: deletions."""

        prefix = "TCA_"
        fields = _TCMSG_FIELDS
        nla_map = (("TCA_UNSPEC", "none"), ("TCA_KIND", "asciiz"))

    class htb_qdisc_msg(nlmsg):
        prefix = "TCA_"
        fields = _TCMSG_FIELDS
        nla_map = (("TCA_UNSPEC", "none"), ("TCA_KIND", "asciiz"), ("TCA_OPTIONS", "htb_options"))

        class htb_options(nla):
            nla_map = ((0, "TCA_HTB_UNSPEC", "none"), (1, "TCA_HTB_PARMS", "none"), (2, "TCA_HTB_INIT", "cdata"))

    def _u32_msg(action_options):
        """A u32 filter message class whose actions' TCA_ACT_OPTIONS are ``action_options`` (an nla class)."""

        class u32_msg(nlmsg):
            prefix = "TCA_"
            fields = _TCMSG_FIELDS
            nla_map = (("TCA_UNSPEC", "none"), ("TCA_KIND", "asciiz"), ("TCA_OPTIONS", "u32_options"))

            class u32_options(nla):
                nla_map = (
                    (0, "TCA_U32_UNSPEC", "none"),
                    (1, "TCA_U32_CLASSID", "uint32"),
                    (2, "TCA_U32_HASH", "uint32"),
                    (3, "TCA_U32_LINK", "uint32"),
                    (4, "TCA_U32_DIVISOR", "uint32"),
                    (5, "TCA_U32_SEL", "cdata"),
                    (7, "TCA_U32_ACT", "act_prio"),
                )

                class act_prio(nla):
                    nla_map = tuple((i, "TCA_ACT_PRIO_%d" % i, "tca_act") for i in range(1, 33))

                    class tca_act(nla):
                        nla_map = ((0, "TCA_ACT_UNSPEC", "none"), (1, "TCA_ACT_KIND", "asciiz"), (2, "TCA_ACT_OPTIONS", "options"))

                        options = action_options

        return u32_msg

    class gact_options(nla):
        """TCA_ACT_OPTIONS of ``gact`` (tc sends it with NLA_F_NESTED): struct tc_gact as bytes."""

        nla_flags = NLA_F_NESTED
        nla_map = ((0, "TCA_GACT_UNSPEC", "none"), (1, "TCA_GACT_TM", "none"), (2, "TCA_GACT_PARMS", "cdata"))

    # a u32 filter whose action is ``nat`` (the codec of act_nat_codec), and one whose action is ``gact`` (the
    # pass filters of excluded destinations); the hash table and the link have no action and use the first
    u32_filter_msg = _u32_msg(act_nat_codec.options)
    u32_pass_msg = _u32_msg(gact_options)


def _new_msg(cls, index, handle, parent, info, attrs):
    msg = cls()
    msg["family"] = socket.AF_UNSPEC
    msg["pad1"] = 0
    msg["pad2"] = 0
    msg["index"] = index
    msg["handle"] = handle
    msg["parent"] = parent
    msg["info"] = info
    msg["attrs"] = attrs
    return msg


def htb_qdisc_message(index, handle=OWN_QDISC, default=OWN_HTB_DEFAULT):
    """``tc qdisc add dev X root handle d5: htb default d5d5``: struct tc_htb_glob {version 3, r2q 10, defcls}."""
    init = struct.pack("=IIIII", 3, 10, default, 0, 0)
    return _new_msg(htb_qdisc_msg, index, handle, TC_H_ROOT, 0, [["TCA_KIND", "htb"], ["TCA_OPTIONS", {"attrs": [["TCA_HTB_INIT", init]]}]])


def qdisc_delete_message(index, handle=OWN_QDISC):
    return _new_msg(tc_plain_msg, index, handle, TC_H_ROOT, 0, [])


def divisor_message(index, parent, htid=OWN_HTID, prio=OWN_PRIO):
    """``tc filter add dev X parent P: protocol ip prio N handle d5: u32 divisor 256``."""
    return _new_msg(u32_filter_msg, index, htid, parent, filter_info(prio), [["TCA_KIND", "u32"], ["TCA_OPTIONS", {"attrs": [["TCA_U32_DIVISOR", DIVISOR]]}]])


def link_message(index, parent, htid=OWN_HTID, prio=OWN_PRIO):
    """``... u32 link d5: hashkey mask 0x000000ff at 12 match u32 0 0`` (in the prio's root table)."""
    sel = pack_sel([(0, 0, 0)], flags=0, hmask=0xFF, hoff=12)
    options = [["TCA_U32_LINK", htid], ["TCA_U32_SEL", sel]]
    return _new_msg(u32_filter_msg, index, 0, parent, filter_info(prio), [["TCA_KIND", "u32"], ["TCA_OPTIONS", {"attrs": options}]])


def nat_filter_message(index, parent, prio, keys, old, new, direction="egress", control="ok", hash_table=None, handle=0):
    """A u32 filter with one nat action, as ``tc filter add dev X parent P: protocol ip prio N [handle H] u32
    [ht T] match ... action nat <direction> <old> <new> [control]`` sends it (attributes in tc's order).

    ``keys`` are (mask, value, offset) triples (see leaf_keys).
    """
    nat = {"attrs": [["TCA_NAT_PARMS", act_nat_codec.parms_fields(old, new, direction, control)]]}
    act = {"attrs": [["TCA_ACT_PRIO_1", {"attrs": [["TCA_ACT_KIND", "nat"], ["TCA_ACT_OPTIONS", nat]]}]]}
    options = [["TCA_U32_ACT", act]]
    if hash_table is not None:
        options.append(["TCA_U32_HASH", hash_table])
    options.append(["TCA_U32_SEL", pack_sel(keys, flags=TC_U32_TERMINAL)])
    return _new_msg(u32_filter_msg, index, handle, parent, filter_info(prio), [["TCA_KIND", "u32"], ["TCA_OPTIONS", {"attrs": options}]])


def leaf_message(index, parent, src, protocol, sport, nat_to, handle=0, control="continue"):
    """One upstream: ``... u32 ht d5:<last octet>: match ip src S/32 match ip protocol P 0xff
    match ip sport N 0xffff action nat egress S/32 NAT_TO continue``.
    """
    src = ipaddress.ip_address(str(src))
    return nat_filter_message(index, parent, OWN_PRIO, leaf_keys(src, protocol, sport), "%s/32" % src, nat_to, "egress", control,
                              hash_table=OWN_HTID | (bucket_of(src) << 12), handle=handle)


def pass_keys(dst):
    """The u32 key of ``match ip dst <prefix>``: (mask, value, offset)."""
    return [(int(dst.netmask), int(dst.network_address), KEY_DST_OFFSET)]


def pass_message(index, parent, dst, node, control="ok"):
    """One excluded prefix: ``tc filter add dev X parent P: protocol ip prio 1 handle ::<node> u32 match ip dst <dst>
    action gact pass`` (no hash table named: the node goes to the prio's root table, with that node id)."""
    parms = struct.pack(GACT_PARMS_FORMAT, 0, 0, act_nat_codec.CONTROLS["ok" if control == "pass" else control], 0, 0)
    gact = {"attrs": [["TCA_GACT_PARMS", parms]]}
    act = {"attrs": [["TCA_ACT_PRIO_1", {"attrs": [["TCA_ACT_KIND", "gact"], ["TCA_ACT_OPTIONS", gact]]}]]}
    options = [["TCA_U32_ACT", act], ["TCA_U32_SEL", pack_sel(pass_keys(dst), flags=TC_U32_TERMINAL)]]
    return _new_msg(u32_pass_msg, index, node, parent, filter_info(OWN_PRIO), [["TCA_KIND", "u32"], ["TCA_OPTIONS", {"attrs": options}]])


def filter_delete_message(index, parent, handle, prio=OWN_PRIO):
    return _new_msg(tc_plain_msg, index, handle, parent, filter_info(prio), [["TCA_KIND", "u32"]])


def encode(msg, msg_type, flags):
    """The bytes of ``msg`` as they go to the kernel (sequence number and pid 0)."""
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = 0
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data[: msg["header"]["length"]])


# --- decoding of dumps ------------------------------------------------------------------------------


def parse_attrs(data):
    """Netlink attributes of ``data``: list of (type without flags, payload)."""
    result = []
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        result.append((kind & 0x3FFF, bytes(data[offset + 4 : offset + length])))
        offset += (length + 3) & ~3
    return result


def _asciiz(data):
    return data.split(b"\0", 1)[0].decode("ascii", "replace")


def decode_message(raw):
    """A tc message (RTM_*QDISC / RTM_*TFILTER, with its nlmsghdr) into a dict.

    Filters of kind u32 get ``u32``: {hash, link, divisor, classid, sel, actions}, where actions
    are (kind, decoded nat parms or None).
    """
    raw = bytes(raw)
    family, index, handle, parent, info = struct.unpack_from("=BxxxiIII", raw, 16)
    result = {"index": index, "handle": handle, "parent": parent, "prio": info >> 16, "protocol": socket.ntohs(info & 0xFFFF)}
    attrs = dict(parse_attrs(raw[36:]))
    result["kind"] = _asciiz(attrs.get(1, b""))
    options = attrs.get(2)
    if result["kind"] == "u32" and options is not None:
        opts = dict(parse_attrs(options))
        u32 = {}
        for key, name in ((1, "classid"), (2, "hash"), (3, "link"), (4, "divisor")):
            if key in opts:
                u32[name] = struct.unpack("=I", opts[key][:4])[0]
        if 5 in opts:
            u32["sel"] = unpack_sel(opts[5])
        u32["actions"] = []
        for _prio, act in parse_attrs(opts.get(7, b"")):
            act_attrs = dict(parse_attrs(act))
            kind = _asciiz(act_attrs.get(1, b""))
            parms = None
            if kind == "nat" and 2 in act_attrs:
                nat_attrs = dict(parse_attrs(act_attrs[2]))
                if act_nat_codec.TCA_NAT_PARMS in nat_attrs:
                    parms = act_nat_codec.decode_parms(nat_attrs[act_nat_codec.TCA_NAT_PARMS])
            elif kind == "gact" and 2 in act_attrs:
                gact_attrs = dict(parse_attrs(act_attrs[2]))
                data = gact_attrs.get(TCA_GACT_PARMS, b"")
                if len(data) >= struct.calcsize(GACT_PARMS_FORMAT):
                    action = struct.unpack_from(GACT_PARMS_FORMAT, data)[2]
                    parms = {"action": action, "control": act_nat_codec.CONTROL_NAMES.get(action, str(action))}
            u32["actions"].append((kind, parms))
        result["u32"] = u32
    elif result["kind"] == "htb" and options is not None:
        opts = dict(parse_attrs(options))
        if 2 in opts and len(opts[2]) >= 12:
            result["htb_default"] = struct.unpack_from("=I", opts[2], 8)[0]
    return result


def _raw(msg):
    return bytes(msg.data[msg.offset : msg.offset + msg["header"]["length"]])


def leaf_from_filter(entry):
    """A decoded filter -> Leaf when it is one of the module's upstream filters, else None."""
    u32 = entry.get("u32") or {}
    sel = u32.get("sel")
    if not sel or "hash" not in u32 or (u32["hash"] & 0xFFF00000) != OWN_HTID or len(u32["actions"]) != 1:
        return None
    kind, parms = u32["actions"][0]
    if kind != "nat" or parms is None or parms["direction"] != "egress":
        return None
    keys = dict(((mask, offset), value) for mask, value, offset, offmask in sel["keys"] if offmask == 0)
    if len(keys) != 3 or len(sel["keys"]) != 3:
        return None
    try:
        src = ipaddress.IPv4Address(keys[KEY_SRC])
        proto_number = keys[KEY_PROTO] >> 16
        sport = keys[KEY_SPORT] >> 16
    except KeyError:
        return None
    protocol = dict((number, name) for name, number in IPPROTO.items()).get(proto_number)
    if protocol is None or parms["old"] != ipaddress.IPv4Network("%s/32" % src) or (u32["hash"] >> 12) & 0xFF != bucket_of(src):
        return None
    return Leaf(src, protocol, sport, parms["new"], parms["control"], entry["handle"])


def pass_from_filter(entry):
    """A decoded filter -> Pass when it is one of the module's pass filters (an excluded prefix), else None.

    The module's: in a root hash table (the prio's own), node id below the link's, terminal, one key on the
    destination address with a prefix mask, no class, one ``gact`` action with verdict pass.
    """
    u32 = entry.get("u32") or {}
    sel = u32.get("sel")
    handle = entry.get("handle", 0)
    node = handle & 0xFFF
    if not sel or "link" in u32 or "divisor" in u32 or u32.get("classid"):
        return None
    if not handle & 0x80000000 or (handle >> 12) & 0xFF or not 0 < node < FIRST_NODE:
        return None
    if "hash" in u32 and (u32["hash"] & 0xFFFFF000) != (handle & 0xFFFFF000):
        return None
    if sel["flags"] != TC_U32_TERMINAL or len(sel["keys"]) != 1 or len(u32.get("actions") or []) != 1:
        return None
    mask, value, offset, offmask = sel["keys"][0]
    kind, parms = u32["actions"][0]
    if offset != KEY_DST_OFFSET or offmask != 0 or kind != "gact" or parms is None or parms["action"] != TC_ACT_OK:
        return None
    prefixlen = bin(mask).count("1")
    if mask != (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF:
        return None  # not a prefix
    return Pass(ipaddress.IPv4Network((value & mask, prefixlen)), handle)


def render_pass(parent, dst, node):
    return "filter parent %s protocol ip prio %d handle ::%x u32 match ip dst %s action gact pass" % (fmt_qdisc(parent), OWN_PRIO, node, dst)


def render_leaf(parent, src, protocol, sport, nat_to, control="continue"):
    return (
        "filter parent %s protocol ip prio %d u32 ht %s%x: match ip src %s/32 match ip protocol %d 0xff match ip sport %d 0xffff "
        "action nat egress %s/32 %s %s"
        % (fmt_qdisc(parent), OWN_PRIO, fmt_htid(OWN_HTID), bucket_of(src), src, IPPROTO[protocol], sport, src, nat_to, control)
    )


def render_divisor(parent):
    return "filter parent %s protocol ip prio %d handle %s u32 divisor %d" % (fmt_qdisc(parent), OWN_PRIO, fmt_htid(OWN_HTID), DIVISOR)


def render_link(parent):
    return "filter parent %s protocol ip prio %d u32 link %s hashkey mask 0x000000ff at 12 match u32 0 0" % (fmt_qdisc(parent), OWN_PRIO, fmt_htid(OWN_HTID))


def render_qdisc():
    return "qdisc htb %s root default %x" % (fmt_qdisc(OWN_QDISC), OWN_HTB_DEFAULT)


def leaf_order(key):
    """The order leaves are written in: by hash bucket, then address, protocol, port."""
    return (bucket_of(key[0]), int(key[0]), key[1], key[2])


def qdisc_command(device):
    """``qdisc add dev DEVICE ...``: the tc command that creates the module's root qdisc."""
    return "qdisc add dev %s root handle %s htb default %x" % (device, fmt_qdisc(OWN_QDISC), OWN_HTB_DEFAULT)


def add_command(device, rendered):
    """``filter add dev DEVICE ...``: the tc command that creates a ``render_*`` object on ``device``."""
    return "filter add dev %s %s" % (device, rendered[len("filter "):])


def boot_batch(device, rules, exclusions=()):
    """``tc -batch`` lines that build the module's objects for ``rules`` and ``exclusions`` on a device whose root
    qdisc is the kernel's default, as at boot: the same qdisc, hash table, pass filters, link and leaves that
    ``plan`` creates (the commands whose netlink requests the codec tests compare byte for byte with iproute2's)."""
    wanted = expand(rules)
    lines = [qdisc_command(device), add_command(device, render_divisor(OWN_QDISC))]
    lines.extend(add_command(device, render_pass(OWN_QDISC, dst, node)) for node, dst in enumerate(exclusions, 1))
    lines.append(add_command(device, render_link(OWN_QDISC)))
    for key in sorted(wanted, key=leaf_order):
        lines.append(add_command(device, render_leaf(OWN_QDISC, key[0], key[1], key[2], wanted[key])))
    return lines


def expand(rules):
    """Collapsed IPv4 rules -> {(src address, protocol, sport): nat_to}, one entry per upstream address."""
    leaves = {}
    for rule in rules:
        addresses = [rule.src.network_address] if rule.src.num_addresses == 1 else list(rule.src)
        for address in addresses:
            leaves[(address, rule.protocol, rule.sport)] = rule.nat_to
    return leaves


def errno_text(exc):
    """A NetlinkError in words: the errno's name and the kernel's message (``EPERM (1, 'Operation not permitted')``)."""
    code = getattr(exc, "code", None)
    return "%s %s" % (errno.errorcode.get(code, str(code)), exc)


class TcRequestError(Exception):
    """A netlink request the kernel refused, in words (errno name and the kernel's message)."""

    def __init__(self, exc, adding_action=False):
        code = getattr(exc, "code", None)
        text = errno_text(exc)
        if code == errno.ENOENT and adding_action:
            text += " (the kernel answers ENOENT when it cannot load the action module, act_nat)"
        super(TcRequestError, self).__init__("kernel refused: %s" % text)
        self.code = code


class TcState(object):
    def __init__(self):
        self.root_kind = None
        self.root_handle = 0
        self.root_default = True  # the kernel's default root qdisc (handle 0) or none
        self.root_ours = False
        self.parent = None  # where the module's filters are (the root qdisc's handle)
        self.has_ht = False
        self.link_handle = None
        self.leaves = []
        self.passes = []
        self.foreign_at_prio = []
        self.other_filters = 0
        self.classes = 0

    @property
    def exists(self):
        return self.root_ours or self.has_ht or self.link_handle is not None or bool(self.leaves) or bool(self.passes)

    @property
    def rules(self):
        return collapse(Rule(ipaddress.ip_network("%s/32" % leaf.src), leaf.protocol, leaf.sport, leaf.nat_to) for leaf in self.leaves)

    @property
    def exclusions(self):
        return collapse_networks([item.dst for item in self.passes])

    @property
    def root_htid(self):
        """The prio's root hash table (800: as a rule), when a filter of the module's in it says which."""
        for handle in [self.link_handle] + [item.handle for item in self.passes]:
            if handle is not None:
                return handle & 0xFFF00000
        return None

    def lines(self):
        out = []
        if self.root_ours:
            out.append(render_qdisc())
        if self.parent is not None:
            if self.has_ht:
                out.append(render_divisor(self.parent))
            for item in sorted(self.passes, key=lambda x: x.handle & 0xFFF):
                out.append(render_pass(self.parent, item.dst, item.handle & 0xFFF))
            if self.link_handle is not None:
                out.append(render_link(self.parent))
            for leaf in sorted(self.leaves, key=lambda x: (bucket_of(x.src), int(x.src), x.protocol, x.sport)):
                out.append(render_leaf(self.parent, leaf.src, leaf.protocol, leaf.sport, leaf.nat_to, leaf.control))
        return out


class TcBackend(object):
    """Read, plan and apply the module's tc objects on one device through an open IPRoute."""

    name = "tc"

    def __init__(self, ipr, device, index, foreign_qdisc="fail"):
        self.ipr = ipr
        self.device = device
        self.index = index
        self.foreign_qdisc = foreign_qdisc

    # reading
    def read(self):
        state = TcState()
        roots = [q for q in self._dump("qdiscs", self.ipr.get_qdiscs, index=self.index) if q["index"] == self.index and q["parent"] == TC_H_ROOT]
        if not roots:
            return state
        root = roots[0]
        state.root_kind = root["kind"]
        state.root_handle = root["handle"]
        state.root_default = root["handle"] == 0
        state.root_ours = root["kind"] == "htb" and root["handle"] == OWN_QDISC and root.get("htb_default") == OWN_HTB_DEFAULT
        if state.root_default:
            return state
        state.classes = len([c for c in self._dump_classes() if c["handle"] & 0xFFFF0000 == state.root_handle])
        for entry in self._dump_filters(state.root_handle):
            if entry["prio"] != OWN_PRIO:
                state.other_filters += 1
                continue
            if not self._classify(state, entry):
                state.foreign_at_prio.append(entry)
        if state.has_ht or state.link_handle is not None or state.leaves or state.passes:
            state.parent = state.root_handle
        elif state.root_ours:
            state.parent = state.root_handle
        return state

    def _classify(self, state, entry):
        """Record ``entry`` (a filter at the module's prio) in ``state`` when it is the module's; else False."""
        if entry["kind"] != "u32" or entry["protocol"] != ETH_P_IP:
            return False
        u32 = entry.get("u32") or {}
        if entry["handle"] == 0:
            return True  # the prio's classifier itself
        if "divisor" in u32:
            if entry["handle"] == OWN_HTID and u32["divisor"] == DIVISOR:
                state.has_ht = True
                return True
            # the root hash table the kernel makes for every u32 prio (800:, 801:, ...)
            return bool(entry["handle"] & 0x80000000) and u32["divisor"] == 1
        if u32.get("link") == OWN_HTID:
            sel = u32.get("sel") or {}
            if sel.get("hmask") == 0xFF and sel.get("hoff") == 12 and entry["handle"] & 0x80000000:
                state.link_handle = entry["handle"]
                return True
            return False
        excluded = pass_from_filter(entry)
        if excluded is not None:
            state.passes.append(excluded)
            return True
        leaf = leaf_from_filter(entry)
        if leaf is None:
            return False
        state.leaves.append(leaf)
        return True

    def _dump(self, what, call, **kwargs):
        """A dump, decoded. The kernel's "no such object/device" (ENOENT, ENODEV) is an empty answer; any other
        refusal is a ReadError with its cause, never taken for "nothing there"."""
        try:
            return [decode_message(_raw(msg)) for msg in call(**kwargs)]
        except NetlinkError as exc:
            if getattr(exc, "code", None) in (errno.ENOENT, errno.ENODEV):
                return []
            raise ReadError("reading the tc %s of %s failed: %s" % (what, self.device, errno_text(exc)))

    def _dump_filters(self, parent):
        return self._dump("filters", self.ipr.get_filters, index=self.index, parent=parent)

    def _dump_classes(self):
        return self._dump("classes", self.ipr.get_classes, index=self.index)

    # netlink calls
    def _request(self, msg, msg_type, flags):
        """Send one request and wait for the kernel's answer (NLM_F_ACK): TcRequestError when it refuses.

        ``nlm_request_batch`` is pyroute2's public call for requests with side effects, alike in 0.7 and 0.9
        (0.9's sync ``nlm_request`` reads a status key its IPRoute never sets); the type and flags travel in
        the message's header, which is how that call takes them.
        """
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = flags
        try:
            list(self.ipr.nlm_request_batch([msg]))
        except NetlinkError as exc:
            raise TcRequestError(exc, adding_action=msg_type == RTM_NEWTFILTER)

    def _add_qdisc(self):
        self._request(htb_qdisc_message(self.index), RTM_NEWQDISC, FLAGS_CREATE)

    def _del_qdisc(self):
        self._request(qdisc_delete_message(self.index), RTM_DELQDISC, FLAGS_DELETE)

    def _undo_qdisc(self):
        self._gone_ok(self._del_qdisc)

    @staticmethod
    def _gone_ok(call, *args):
        """Run a deletion; an object already gone is fine (deleting a prio's last filter takes its hash tables along)."""
        try:
            call(*args)
        except TcRequestError as exc:
            if exc.code not in (errno.ENOENT, errno.EINVAL):
                raise

    def _add_ht(self, parent):
        self._request(divisor_message(self.index, parent), RTM_NEWTFILTER, FLAGS_CREATE)

    def _del_handle(self, parent, handle):
        self._request(filter_delete_message(self.index, parent, handle), RTM_DELTFILTER, FLAGS_DELETE)

    def _add_link(self, parent):
        self._request(link_message(self.index, parent), RTM_NEWTFILTER, FLAGS_CREATE)

    def _del_link(self, parent):
        handle = self._find_link(parent)
        if handle is not None:
            self._gone_ok(self._del_handle, parent, handle)

    def _del_ht(self, parent):
        # the link's reference on the table is dropped after an RCU grace period: EBUSY for a moment
        for _attempt in range(50):
            try:
                return self._gone_ok(self._del_handle, parent, OWN_HTID)
            except TcRequestError as exc:
                if exc.code != errno.EBUSY:
                    raise
                time.sleep(0.05)
        return self._gone_ok(self._del_handle, parent, OWN_HTID)

    def _find_link(self, parent):
        for entry in self._dump_filters(parent):
            if entry["prio"] == OWN_PRIO and (entry.get("u32") or {}).get("link") == OWN_HTID:
                return entry["handle"]
        return None

    def _add_leaf(self, parent, handle, src, protocol, sport, nat_to, control="continue"):
        self._request(leaf_message(self.index, parent, src, protocol, sport, nat_to, handle, control), RTM_NEWTFILTER, FLAGS_CREATE)

    # planning
    def plan(self, state, rules, exclusions=()):
        wanted = expand(rules)
        before = state.lines()
        if not wanted:
            return Plan(before, [], steps=self._removal_steps(state))
        exclusions = list(exclusions)
        steps = []
        parent = state.parent
        if parent is None:
            if state.root_default:
                parent = OWN_QDISC
                steps.append(Step("tc " + qdisc_command(self.device),
                                  self._add_qdisc, self._undo_qdisc))
            elif self.foreign_qdisc == "attach" and state.root_kind in ATTACHABLE:
                parent = state.root_handle
            else:
                raise ValidationError(
                    "device %s has a root qdisc %s %s that tc_nat_filter did not create; it will not replace it. "
                    "Remove it, set foreign_qdisc: attach to add the filters to it (kinds %s; it is never deleted), "
                    "or use backend: nftables" % (self.device, state.root_kind, fmt_qdisc(state.root_handle), ", ".join(ATTACHABLE))
                )
        elif not state.root_ours and self.foreign_qdisc != "attach":
            raise ValidationError(
                "the module's filters sit on root qdisc %s %s of %s, which it did not create: set foreign_qdisc: attach to keep "
                "managing them there" % (state.root_kind, fmt_qdisc(state.root_handle), self.device)
            )
        if state.foreign_at_prio:
            raise ValidationError(
                "prio %d of qdisc %s on %s holds filters tc_nat_filter did not create (%d); it will not share that prio"
                % (OWN_PRIO, fmt_qdisc(parent), self.device, len(state.foreign_at_prio))
            )
        own_qdisc = state.root_ours or (state.parent is None and state.root_default)
        if exclusions and not own_qdisc:
            raise ValidationError(
                "exclude_destinations cannot be written on %s: its filters sit on root qdisc %s %s, which tc_nat_filter did not create, "
                "and a pass filter would end that qdisc's classification of the excluded packets; let the module own the root "
                "qdisc or use backend: nftables" % (self.device, state.root_kind, fmt_qdisc(state.root_handle))
            )
        if not state.has_ht:
            steps.append(Step("tc " + add_command(self.device, render_divisor(parent)), lambda: self._add_ht(parent), lambda: self._del_ht(parent)))
        # the pass filters of excluded destinations go in before the link: no moment where an excluded reply is rewritten
        kept, pass_steps = self._pass_changes(state, parent, exclusions)
        steps.extend(pass_steps)
        if state.link_handle is None:
            steps.append(Step("tc " + add_command(self.device, render_link(parent)), lambda: self._add_link(parent), lambda: self._del_link(parent)))

        have = dict(((leaf.src, leaf.protocol, leaf.sport), leaf) for leaf in state.leaves)
        used = set(leaf.handle for leaf in state.leaves)
        for key, leaf in sorted(have.items(), key=lambda item: (int(item[0][0]), item[0][1], item[0][2])):
            if wanted.get(key) != leaf.nat_to or leaf.control != "continue":
                steps.append(self._leaf_removal(parent, leaf))
        for key in sorted(wanted, key=leaf_order):
            leaf = have.get(key)
            if leaf is not None and leaf.nat_to == wanted[key] and leaf.control == "continue":
                continue
            handle = self._free_handle(key[0], used)
            used.add(handle)
            steps.append(self._leaf_addition(parent, handle, key[0], key[1], key[2], wanted[key]))

        after = [] if not (state.root_ours or state.root_default) else [render_qdisc()]
        after.append(render_divisor(parent))
        after.extend(render_pass(parent, dst, node) for node, dst in sorted(kept, key=lambda item: item[0]))
        after.append(render_link(parent))
        for key in sorted(wanted, key=leaf_order):
            after.append(render_leaf(parent, key[0], key[1], key[2], wanted[key]))
        return Plan(before, after, steps=steps)

    def _pass_changes(self, state, parent, exclusions):
        """Steps that turn the pass filters into one per prefix of ``exclusions``: ([(node, dst)] after, steps).

        Removals first, then additions at node ids no old pass filter had (1..7ff, below the link's 800)."""
        wanted = set(exclusions)
        steps, kept, seen = [], [], set()
        for item in sorted(state.passes, key=lambda x: x.handle & 0xFFF):
            if item.dst in wanted and item.dst not in seen:
                seen.add(item.dst)
                kept.append((item.handle & 0xFFF, item.dst))
                continue
            steps.append(self._pass_removal(parent, item))
        used = set(item.handle & 0xFFF for item in state.passes)
        node = 0
        for dst in exclusions:
            if dst in seen:
                continue
            node += 1
            while node in used:
                node += 1
            if node >= FIRST_NODE:
                raise ValidationError("no free node id below %x in prio %d's root table of %s for exclude_destinations %s" % (
                    FIRST_NODE, OWN_PRIO, self.device, dst))
            used.add(node)
            kept.append((node, dst))
            steps.append(self._pass_addition(parent, state.root_htid, node, dst))
        return kept, steps

    def _pass_addition(self, parent, root_htid, node, dst):
        line = "tc " + add_command(self.device, render_pass(parent, dst, node))

        def undo():
            handle = (root_htid | node) if root_htid is not None else self._find_pass(parent, node)
            if handle is not None:
                self._gone_ok(self._del_handle, parent, handle)

        return Step(line, lambda: self._add_pass(parent, node, dst), undo)

    def _pass_removal(self, parent, item):
        return Step(self._del_line(parent, fmt_handle(item.handle)), lambda: self._del_handle(parent, item.handle),
                    lambda: self._add_pass(parent, item.handle & 0xFFF, item.dst))

    def _add_pass(self, parent, node, dst):
        self._request(pass_message(self.index, parent, dst, node), RTM_NEWTFILTER, FLAGS_CREATE)

    def _find_pass(self, parent, node):
        """The whole handle of the pass filter with node id ``node`` at the module's prio (its root table's id is the kernel's)."""
        for entry in self._dump_filters(parent):
            if entry["prio"] == OWN_PRIO and entry["handle"] & 0xFFF == node and pass_from_filter(entry) is not None:
                return entry["handle"]
        return None

    @staticmethod
    def _free_handle(src, used):
        base = OWN_HTID | (bucket_of(src) << 12)
        node = FIRST_NODE
        while base | node in used:
            node += 1
            if node > 0xFFF:
                node = 1
        return base | node

    def _leaf_addition(self, parent, handle, src, protocol, sport, nat_to):
        line = "tc filter add dev %s parent %s protocol ip prio %d handle %s u32%s" % (
            self.device, fmt_qdisc(parent), OWN_PRIO, fmt_handle(handle), render_leaf(parent, src, protocol, sport, nat_to).split(" u32", 1)[1])
        return Step(line, lambda: self._add_leaf(parent, handle, src, protocol, sport, nat_to), lambda: self._gone_ok(self._del_handle, parent, handle))

    def _del_line(self, parent, handle):
        return "tc filter del dev %s parent %s protocol ip prio %d handle %s u32" % (self.device, fmt_qdisc(parent), OWN_PRIO, handle)

    def _leaf_removal(self, parent, leaf):
        line = self._del_line(parent, fmt_handle(leaf.handle))
        return Step(line, lambda: self._del_handle(parent, leaf.handle),
                    lambda: self._add_leaf(parent, leaf.handle, leaf.src, leaf.protocol, leaf.sport, leaf.nat_to, leaf.control))

    def _removal_steps(self, state):
        """Remove exactly the module's objects: its filters, and its qdisc when nothing else uses it.

        When everything at the module's prio is the module's, one request deletes the prio (the kernel
        takes the hash table along); otherwise the module's filters go one by one.
        """
        steps = []
        parent = state.parent
        if parent is not None and (state.has_ht or state.link_handle is not None or state.leaves or state.passes):
            if not state.foreign_at_prio:
                line = "tc filter del dev %s parent %s protocol ip prio %d u32" % (self.device, fmt_qdisc(parent), OWN_PRIO)
                steps.append(Step(line, lambda: self._del_handle(parent, 0), lambda: self._rebuild(parent, state)))
            else:
                for leaf in sorted(state.leaves, key=lambda x: (bucket_of(x.src), int(x.src))):
                    steps.append(self._leaf_removal(parent, leaf))
                for item in sorted(state.passes, key=lambda x: x.handle & 0xFFF):
                    steps.append(self._pass_removal(parent, item))
                if state.link_handle is not None:
                    handle = state.link_handle
                    steps.append(Step(self._del_line(parent, fmt_handle(handle)), lambda: self._del_handle(parent, handle), lambda: self._add_link(parent)))
                if state.has_ht:
                    steps.append(Step(self._del_line(parent, fmt_htid(OWN_HTID)), lambda: self._del_ht(parent), lambda: self._add_ht(parent)))
        if state.root_ours and not state.other_filters and not state.classes and not state.foreign_at_prio:
            steps.append(Step("tc qdisc del dev %s root handle %s htb" % (self.device, fmt_qdisc(OWN_QDISC)), self._del_qdisc, self._add_qdisc))
        return steps

    def _rebuild(self, parent, state):
        """Undo of deleting the module's prio: its hash table, pass filters, link and nat filters as they were."""
        if state.has_ht:
            self._add_ht(parent)
        for item in state.passes:
            self._add_pass(parent, item.handle & 0xFFF, item.dst)
        if state.link_handle is not None:
            self._add_link(parent)
        for leaf in state.leaves:
            self._add_leaf(parent, leaf.handle, leaf.src, leaf.protocol, leaf.sport, leaf.nat_to, leaf.control)
