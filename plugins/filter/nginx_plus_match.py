# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The C(send) and C(expect) strings of an NGINX Plus stream C(match) block for a service's health check."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: nginx_plus_match
version_added: 0.1.0
short_description: NGINX Plus C(match) block strings for a service's DNS or UDP health check
description:
  - Turns a service's C(health_check) settings (the nginx_transparent_proxy role's format) into the C(send) and
    C(expect) strings of an NGINX Plus stream C(match) block, escaped for a double-quoted nginx string.
  - For C(type=dns) it builds a real DNS query (fixed ID 0x4e54, no recursion, class IN) for C(dns_name) and
    C(dns_type); C(expect) is a regular expression on the reply's first four bytes, matching that ID, the
    response bit and one of the accepted C(dns_rcodes).
  - For C(type=udp) or C(type=tcp) C(send) and C(expect) are passed through.
author: netops maintainers
options:
  _input:
    description: The service's health_check dict (C(type), C(dns_name), C(dns_type), C(dns_rcodes), C(send), C(expect)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Strings of a DNS match block
  ansible.builtin.debug:
    msg: "{{ {'type': 'dns', 'dns_name': 'www.example.com', 'dns_type': 'A', 'dns_rcodes': ['NOERROR']}
             | netops.ip_transparency.nginx_plus_match }}"
"""

RETURN = r"""
_value:
  description: C(send) (the probe's payload, bytes as C(\\xNN)) and C(expect) (a regular expression, C('') for any reply).
  type: dict
"""

from ansible.errors import AnsibleFilterError

DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33, "ANY": 255}
DNS_RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
QUERY_ID = 0x4E54


def _escape(data):
    return "".join("\\x%02x" % byte for byte in bytearray(data))


def dns_query(name, qtype):
    """The bytes of a DNS query for ``name`` and ``qtype`` (ID 0x4e54, RD=0, one question of class IN)."""
    code = DNS_TYPES.get(str(qtype).upper())
    if code is None:
        raise AnsibleFilterError("dns_type %r is not one of %s" % (qtype, ", ".join(sorted(DNS_TYPES))))
    labels = [label for label in str(name).strip(".").split(".") if label]
    out = bytearray([QUERY_ID >> 8, QUERY_ID & 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    for label in labels:
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise AnsibleFilterError("dns_name %r has a label longer than 63 bytes" % name)
        out.append(len(raw))
        out.extend(raw)
    out.extend([0, code >> 8, code & 0xFF, 0, 1])
    return bytes(out)


def nginx_plus_match(check):
    if not isinstance(check, dict):
        raise AnsibleFilterError("nginx_plus_match expects a health_check dict, got %r" % (check,))
    if check.get("type") != "dns":
        return {"send": str(check.get("send", "")), "expect": str(check.get("expect", ""))}
    rcodes = []
    for rcode in check.get("dns_rcodes") or ["NOERROR"]:
        if str(rcode).upper() not in DNS_RCODES:
            raise AnsibleFilterError("dns_rcodes: %r is not one of %s" % (rcode, ", ".join(DNS_RCODES)))
        rcodes.append(DNS_RCODES[str(rcode).upper()])
    # Fourth byte of the header: RA, Z, AD, CD in the high nibble (any), RCODE in the low nibble.
    fourth = "".join("\\x%02x" % (high << 4 | code) for code in sorted(rcodes) for high in range(16))
    expect = "^\\x%02x\\x%02x[\\x80-\\xff][%s]" % (QUERY_ID >> 8, QUERY_ID & 0xFF, fourth)
    return {"send": _escape(dns_query(check.get("dns_name", "."), check.get("dns_type", "SOA"))), "expect": expect}


class FilterModule(object):
    def filters(self):
        return {"nginx_plus_match": nginx_plus_match}
