# netops-healthcheck: active health checks for the nginx upstreams of netops.ip_transparency.
#
# Open-source nginx has no active health checks, and with DSR (proxy_responses 0) nginx never sees a reply,
# so its passive checks never fire: a dead upstream keeps its share of the traffic. This program probes every
# upstream of every service from the proxy's own address (ordinary sockets, never IP_TRANSPARENT) and keeps
# one nginx include file per service, the body of its `upstream` block, with `server ... down;` for the
# upstreams that failed. It applies a change by writing the files atomically, `nginx -t`, and a graceful
# reload; a failing `nginx -t` puts the previous files back.
#
#   python3 netops-healthcheck.py run --config /etc/netops/healthcheck.json           the daemon
#   python3 netops-healthcheck.py render --config FILE [--dry-run]                   write the include files once
#   python3 netops-healthcheck.py check-config --config FILE                         validate the configuration
#
# Python 3.11 standard library only; a single file. No shebang on purpose: Debian has no `python`, and the
# unit runs it as `/usr/bin/python3 netops-healthcheck.py ...`.
"""Active health checker for the nginx upstreams of netops.ip_transparency (see the comment above)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import json
import math
import os
import re
import secrets
import signal
import socket
import struct
import sys
import tempfile
import time

PROG = "netops-healthcheck"
VERSION = "1.0"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2

# how often the state file (and the Prometheus textfile) is rewritten when no upstream changed state
STATE_PERIOD = 5.0
# after a failed `nginx -t` or reload, try again at the next membership change or after this long
RETRY_AFTER = 30.0
# a `nginx -t` or reload command that takes longer than this is killed and counted as failed
COMMAND_TIMEOUT = 30.0
# longest comment text kept in an include file, and longest error text kept in the state file
REASON_MAX = 160
ERROR_MAX = 500
# longest reply a TCP or HTTP probe reads before it gives up matching
READ_MAX = 65536

# ---------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------

CHECK_TYPES = ("dns", "udp", "tcp", "http", "none")
NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")

DNS_TYPES = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33,
    "NAPTR": 35, "DS": 43, "DNSKEY": 48, "SVCB": 64, "HTTPS": 65, "ANY": 255, "CAA": 257,
}
DNS_RCODES = {
    "NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
    "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10,
}
DNS_RCODE_NAMES = {v: k for k, v in DNS_RCODES.items()}

TOP_DEFAULTS = {
    "include_dir": "/etc/nginx/netops-transparent-proxy/upstreams",
    "state_file": "/var/lib/netops-healthcheck/state.json",
    "textfile": "",
    "nginx_test": ["nginx", "-t", "-q"],
    "nginx_reload": ["systemctl", "reload", "nginx"],
    "coalesce": 0.3,
    "min_reload_interval": 1.0,
    "hold_down": 3.0,
    "services": [],
}
SERVICE_KEYS = ("name", "port", "upstreams", "server_params", "check")
UPSTREAM_KEYS = ("address", "params")
CHECK_DEFAULTS = {
    "type": None,
    "interval": 1.0,
    "timeout": 0.5,
    "fall": 2,
    "rise": 2,
    "source": "",
    "dns_name": ".",
    "dns_type": "SOA",
    "dns_rcodes": ["NOERROR"],
    "dns_proto": "udp",
    "send": "",
    "expect": "",
    "http_path": "/",
    "http_host": "",
    "http_status": [200],
}


class ConfigError(Exception):
    """The configuration is invalid; the message names the service and the field."""


@dataclasses.dataclass(frozen=True)
class Check:
    type: str
    interval: float
    timeout: float
    fall: int
    rise: int
    source: str
    dns_name: str
    dns_type: int
    dns_rcodes: tuple
    dns_proto: str
    send: bytes
    expect: str
    http_path: str
    http_host: str
    http_status: tuple


@dataclasses.dataclass(frozen=True)
class Service:
    name: str
    port: int
    upstreams: tuple  # normalised address strings, in the configured order
    server_params: str  # nginx `server` parameters of every upstream (weight=2 max_fails=0...)
    check: Check
    upstream_params: tuple = ()  # each upstream's own parameters (weight=5, backup...), aligned with upstreams

    def endpoint(self, address):
        return endpoint(address, self.port)

    def params_of(self, address):
        """The nginx `server` parameters of one upstream: the service's, then the upstream's own."""
        own = self.upstream_params[self.upstreams.index(address)] if self.upstream_params else ""
        return " ".join(p for p in (self.server_params, own) if p)

    @property
    def endpoints(self):
        return [self.endpoint(a) for a in self.upstreams]


@dataclasses.dataclass(frozen=True)
class Config:
    path: str
    include_dir: str
    state_file: str
    textfile: str
    nginx_test: tuple
    nginx_reload: tuple
    coalesce: float
    min_reload_interval: float
    hold_down: float
    services: tuple

    def include_path(self, service):
        return os.path.join(self.include_dir, service.name + ".conf")


def endpoint(address, port):
    """nginx's spelling of an upstream: 172.16.0.11:53, [fd00:16::13]:53."""
    if ":" in address:
        return "[%s]:%d" % (address, port)
    return "%s:%d" % (address, port)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value, where, minimum=0.0, exclusive=False, maximum=86400.0):
    if not _is_number(value):
        raise ConfigError("%s must be a number, not %s" % (where, json.dumps(value)))
    value = float(value)
    if not math.isfinite(value) or (value <= minimum if exclusive else value < minimum) or value > maximum:
        raise ConfigError("%s must be %s %g and at most %g, not %g" % (where, ">" if exclusive else ">=", minimum, maximum, value))
    return value


def _integer(value, where, minimum, maximum):
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError("%s must be an integer, not %s" % (where, json.dumps(value)))
    if not minimum <= value <= maximum:
        raise ConfigError("%s must be between %d and %d, not %d" % (where, minimum, maximum, value))
    return value


def _string(value, where):
    if not isinstance(value, str):
        raise ConfigError("%s must be a string, not %s" % (where, json.dumps(value)))
    return value


def _abs_path(value, where, allow_empty=False):
    value = _string(value, where)
    if not value and allow_empty:
        return value
    if not value.startswith("/") or "\0" in value or "\n" in value:
        raise ConfigError("%s must be an absolute path, not %s" % (where, json.dumps(value)))
    return os.path.normpath(value)


def _command(value, where):
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value) or not value[0]:
        raise ConfigError("%s must be a non-empty list of strings (a command and its arguments), not %s" % (where, json.dumps(value)))
    return tuple(value)


def _unknown(obj, known, where):
    extra = sorted(set(obj) - set(known))
    if extra:
        raise ConfigError("%s: unknown key%s %s (known: %s)" % (where, "s" if len(extra) > 1 else "", ", ".join(extra), ", ".join(sorted(known))))


def _server_params(value, where):
    """nginx `server` parameters, one line of words: nothing that could end the directive or hide `down`."""
    params = " ".join(_string(value, where).split())
    if re.search(r"[;{}#\"'\\\x00-\x1f]", params):
        raise ConfigError("%s must not contain ; { } # quotes, backslashes or control characters: %s" % (where, json.dumps(params)))
    if "down" in params.split():
        raise ConfigError("%s must not contain `down`: the health checker sets it" % where)
    return params


def parse_address(value, where):
    """A normalised IPv4 or IPv6 address (no zone, no prefix)."""
    value = _string(value, where)
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ConfigError("%s: %s is not an IPv4 or IPv6 address" % (where, json.dumps(value)))
    if getattr(addr, "scope_id", None):
        raise ConfigError("%s: %s has a zone, which is not supported" % (where, json.dumps(value)))
    return str(addr)


def encode_dns_name(name):
    """Wire format of a DNS name ("." and "" are the root); ValueError when it cannot be one."""
    name = name.strip()
    if name in ("", "."):
        return b"\x00"
    if name.endswith("."):
        name = name[:-1]
    out = bytearray()
    for label in name.split("."):
        try:
            raw = label.encode("ascii")
        except UnicodeEncodeError:
            try:
                raw = label.encode("idna")
            except UnicodeError as ex:
                raise ValueError("label %r: %s" % (label, ex))
        if not 1 <= len(raw) <= 63:
            raise ValueError("label %r must have 1 to 63 characters" % label)
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError("longer than 255 bytes")
    return bytes(out)


def dns_type_number(value):
    """A record type by name (A, AAAA, SOA...) or as TYPEnnn; ValueError otherwise."""
    text = str(value).strip().upper()
    if text in DNS_TYPES:
        return DNS_TYPES[text]
    match = re.match(r"^TYPE(\d{1,5})$", text)
    if match and 1 <= int(match.group(1)) <= 65535:
        return int(match.group(1))
    raise ValueError(value)


def dns_type_name(number):
    for key, val in DNS_TYPES.items():
        if val == number:
            return key
    return "TYPE%d" % number


_ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[\\nrt0])")
_SIMPLE_ESCAPES = {"\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t", "0": b"\x00"}


def unescape_payload(text):
    """Bytes of a payload given as text: UTF-8, with \\xNN, \\n, \\r, \\t, \\0 and \\\\ escapes."""
    out = bytearray()
    pos = 0
    for match in _ESCAPE_RE.finditer(text):
        out += text[pos:match.start()].encode("utf-8")
        esc = match.group(1)
        out += bytes([int(esc[1:], 16)]) if esc[0] == "x" else _SIMPLE_ESCAPES[esc]
        pos = match.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def _parse_check(obj, where, upstreams):
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise ConfigError("%s must be an object" % where)
    _unknown(obj, CHECK_DEFAULTS, where)
    val = dict(CHECK_DEFAULTS)
    val.update(obj)
    ctype = val["type"]
    if ctype not in CHECK_TYPES:
        raise ConfigError("%s.type must be one of %s, not %s" % (where, ", ".join(CHECK_TYPES), json.dumps(ctype)))
    interval = _number(val["interval"], where + ".interval", 0.0, exclusive=True, maximum=3600.0)
    timeout = _number(val["timeout"], where + ".timeout", 0.0, exclusive=True, maximum=3600.0)
    if timeout >= interval:
        raise ConfigError("%s.timeout (%g) must be less than %s.interval (%g)" % (where, timeout, where, interval))
    fall = _integer(val["fall"], where + ".fall", 1, 1000)
    rise = _integer(val["rise"], where + ".rise", 1, 1000)
    source = _string(val["source"], where + ".source").strip()
    if source:
        source = parse_address(source, where + ".source")
        family = ipaddress.ip_address(source).version
        wrong = [a for a in upstreams if ipaddress.ip_address(a).version != family]
        if wrong and ctype != "none":
            raise ConfigError("%s.source %s is IPv%d but upstream %s is not: probes could not be sent from it" % (where, source, family, wrong[0]))
    dns_name = _string(val["dns_name"], where + ".dns_name")
    try:
        encode_dns_name(dns_name)
    except ValueError as ex:
        raise ConfigError("%s.dns_name %s is not a valid DNS name: %s" % (where, json.dumps(dns_name), ex))
    try:
        dns_type = dns_type_number(_string(val["dns_type"], where + ".dns_type"))
    except ValueError:
        raise ConfigError("%s.dns_type must be one of %s or TYPEnnn, not %s" % (where, ", ".join(DNS_TYPES), json.dumps(val["dns_type"])))
    rcodes = val["dns_rcodes"]
    if not isinstance(rcodes, list) or not rcodes:
        raise ConfigError("%s.dns_rcodes must be a non-empty list of answer codes" % where)
    for code in rcodes:
        if not isinstance(code, str) or code.strip().upper() not in DNS_RCODES:
            raise ConfigError("%s.dns_rcodes: %s is not one of %s" % (where, json.dumps(code), ", ".join(DNS_RCODES)))
    dns_rcodes = tuple(sorted(set(DNS_RCODES[c.strip().upper()] for c in rcodes)))
    dns_proto = val["dns_proto"]
    if dns_proto not in ("udp", "tcp"):
        raise ConfigError("%s.dns_proto must be udp or tcp, not %s" % (where, json.dumps(dns_proto)))
    send = unescape_payload(_string(val["send"], where + ".send"))
    expect = _string(val["expect"], where + ".expect")
    try:
        re.compile(expect.encode("utf-8"), re.DOTALL)
    except re.error as ex:
        raise ConfigError("%s.expect %s is not a valid regular expression: %s" % (where, json.dumps(expect), ex))
    http_path = _string(val["http_path"], where + ".http_path")
    if not http_path.startswith("/") or re.search(r"[\s\x00-\x1f\x7f]", http_path):
        raise ConfigError("%s.http_path must start with / and contain no spaces or control characters, not %s" % (where, json.dumps(http_path)))
    http_host = _string(val["http_host"], where + ".http_host")
    if re.search(r"[\s\x00-\x1f\x7f]", http_host):
        raise ConfigError("%s.http_host must contain no spaces or control characters, not %s" % (where, json.dumps(http_host)))
    statuses = val["http_status"]
    if not isinstance(statuses, list) or not statuses:
        raise ConfigError("%s.http_status must be a non-empty list of status codes" % where)
    for code in statuses:
        _integer(code, where + ".http_status[]", 100, 599)
    return Check(type=ctype, interval=interval, timeout=timeout, fall=fall, rise=rise, source=source,
                 dns_name=dns_name, dns_type=dns_type, dns_rcodes=dns_rcodes, dns_proto=dns_proto, send=send,
                 expect=expect, http_path=http_path, http_host=http_host, http_status=tuple(sorted(set(statuses))))


def _parse_service(obj, index, seen):
    where = "services[%d]" % index
    if not isinstance(obj, dict):
        raise ConfigError("%s must be an object" % where)
    name = obj.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError("%s.name must match [A-Za-z0-9_]+, not %s" % (where, json.dumps(name)))
    where = "service %s" % name
    if name in seen:
        raise ConfigError("%s: the name is used by more than one service" % where)
    _unknown(obj, SERVICE_KEYS, where)
    if "port" not in obj:
        raise ConfigError("%s: port is required" % where)
    port = _integer(obj["port"], where + ": port", 1, 65535)
    ups = obj.get("upstreams")
    if not isinstance(ups, list) or not ups:
        raise ConfigError("%s: upstreams must be a non-empty list of addresses" % where)
    addrs = []
    own_params = []
    for i, raw in enumerate(ups):
        # an upstream is its address, or {"address": ..., "params": "weight=5 backup"} (its own server parameters)
        own = ""
        if isinstance(raw, dict):
            _unknown(raw, UPSTREAM_KEYS, "%s: upstreams[%d]" % (where, i))
            if "address" not in raw:
                raise ConfigError("%s: upstreams[%d].address is required" % (where, i))
            own = _server_params(raw.get("params", ""), "%s: upstreams[%d].params" % (where, i))
            raw = raw["address"]
        elif not isinstance(raw, str):
            raise ConfigError("%s: upstreams[%d] must be an address or an object {address, params}, not %s" % (where, i, json.dumps(raw)))
        addr = parse_address(raw, "%s: upstreams[%d]" % (where, i))
        if addr in addrs:
            raise ConfigError("%s: upstreams[%d] %s is listed twice" % (where, i, addr))
        addrs.append(addr)
        own_params.append(own)
    params = _server_params(obj.get("server_params", ""), where + ": server_params")
    if "check" not in obj:
        raise ConfigError("%s: check is required (type none disables probing)" % where)
    check = _parse_check(obj["check"], where + ": check", addrs)
    return Service(name=name, port=port, upstreams=tuple(addrs), server_params=params, check=check,
                   upstream_params=tuple(own_params) if any(own_params) else ())


def parse_config(data, path=""):
    """A Config from the decoded JSON document; ConfigError naming the service and the field."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a JSON object")
    _unknown(data, TOP_DEFAULTS, "configuration")
    val = dict(TOP_DEFAULTS)
    val.update(data)
    services_raw = val["services"]
    if not isinstance(services_raw, list):
        raise ConfigError("services must be a list")
    services = []
    seen = set()
    for index, obj in enumerate(services_raw):
        svc = _parse_service(obj, index, seen)
        seen.add(svc.name)
        services.append(svc)
    return Config(
        path=path,
        include_dir=_abs_path(val["include_dir"], "include_dir"),
        state_file=_abs_path(val["state_file"], "state_file"),
        textfile=_abs_path(val["textfile"], "textfile", allow_empty=True),
        nginx_test=_command(val["nginx_test"], "nginx_test"),
        nginx_reload=_command(val["nginx_reload"], "nginx_reload"),
        coalesce=_number(val["coalesce"], "coalesce", 0.0, maximum=60.0),
        min_reload_interval=_number(val["min_reload_interval"], "min_reload_interval", 0.0, maximum=3600.0),
        hold_down=_number(val["hold_down"], "hold_down", 0.0, maximum=86400.0),
        services=tuple(services),
    )


def load_config(path):
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as ex:
        raise ConfigError("cannot read %s: %s" % (path, ex.strerror or ex))
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as ex:
        raise ConfigError("%s is not UTF-8: %s" % (path, ex))
    except json.JSONDecodeError as ex:
        raise ConfigError("%s is not valid JSON: %s" % (path, ex))
    return parse_config(data, os.path.abspath(path))


# ---------------------------------------------------------------------------------------------------------
# DNS: query and reply, built and parsed with struct
# ---------------------------------------------------------------------------------------------------------

class DNSError(Exception):
    """A reply that is malformed or does not answer the query."""


def build_dns_query(qid, name, qtype, rd=True):
    """A standard query (opcode 0, one question, class IN). RD=1 by default: the query looks like a
    client's (dig's), an authoritative server ignores the bit and a resolver answers from its cache or
    recurses."""
    flags = 0x0100 if rd else 0
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + encode_dns_name(name) + struct.pack("!HH", qtype, 1)


def _read_dns_name(msg, offset):
    """(lower-case dotted name without the final dot, offset after the name); follows compression
    pointers with a bound on their number; DNSError on anything out of bounds."""
    labels = []
    end = None
    jumps = 0
    total = 0
    while True:
        if offset >= len(msg):
            raise DNSError("name runs past the end of the reply")
        length = msg[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(msg):
                raise DNSError("compression pointer runs past the end of the reply")
            if end is None:
                end = offset + 2
            jumps += 1
            if jumps > 32:
                raise DNSError("compression pointer loop")
            offset = ((length & 0x3F) << 8) | msg[offset + 1]
            continue
        if length & 0xC0:
            raise DNSError("unsupported label type 0x%02x" % length)
        if length == 0:
            offset += 1
            break
        if offset + 1 + length > len(msg):
            raise DNSError("label runs past the end of the reply")
        total += length + 1
        if total > 255:
            raise DNSError("name longer than 255 bytes")
        labels.append(msg[offset + 1:offset + 1 + length].decode("latin-1").lower())
        offset += 1 + length
    return ".".join(labels), (end if end is not None else offset)


def _canonical_name(name):
    name = name.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if name == ".":
        name = ""
    return name


def parse_dns_reply(msg, qid, name, qtype):
    """Check that msg answers the query (ID, QR=1, opcode, the same question); return (rcode, flags).
    DNSError when it is malformed or answers something else."""
    if len(msg) < 12:
        raise DNSError("short reply (%d bytes)" % len(msg))
    rid, flags, qdcount, _an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid:
        raise DNSError("reply ID 0x%04x does not match the query's 0x%04x" % (rid, qid))
    if not flags & 0x8000:
        raise DNSError("not a reply (QR=0)")
    opcode = (flags >> 11) & 0xF
    if opcode != 0:
        raise DNSError("reply opcode %d, expected 0 (QUERY)" % opcode)
    rcode = flags & 0xF
    if qdcount != 1:
        raise DNSError("reply has %d questions, expected 1 (rcode %s)" % (qdcount, DNS_RCODE_NAMES.get(rcode, rcode)))
    rname, offset = _read_dns_name(msg, 12)
    if offset + 4 > len(msg):
        raise DNSError("question runs past the end of the reply")
    rtype, rclass = struct.unpack("!HH", msg[offset:offset + 4])
    want = _canonical_name(name)
    if rname != want or rtype != qtype or rclass != 1:
        raise DNSError("reply is for %s %s class %d, not for the question %s %s" % (
            rname or ".", dns_type_name(rtype), rclass, want or ".", dns_type_name(qtype)))
    return rcode, flags


# ---------------------------------------------------------------------------------------------------------
# state of one upstream: the up/down state machine (pure; the caller passes the clock)
# ---------------------------------------------------------------------------------------------------------

def iso(epoch):
    """ISO 8601 UTC, seconds: 2026-12-03T19:40:01Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def one_line(text, limit=ERROR_MAX):
    text = " | ".join(part.strip() for part in str(text).splitlines() if part.strip())
    text = "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclasses.dataclass
class Transition:
    kind: str  # "up" or "down"
    message: str  # the journal line


@dataclasses.dataclass
class UpstreamState:
    service: str
    address: str
    port: int
    up: bool = True
    since: float = 0.0  # wall-clock epoch of the last transition (or the daemon's start)
    down_mono: float | None = None  # monotonic time it went down: the hold-down counts from here
    reason: str = ""  # why it went down; stays the same while it is down (the include shows it)
    last_error: str = ""
    ok: int = 0  # consecutive good probes
    fail: int = 0  # consecutive failed probes
    latency: float | None = None
    last_probe: float | None = None
    transitions: int = 0

    @property
    def endpoint(self):
        return endpoint(self.address, self.port)

    def record(self, ok, error, latency, check, hold_down, mono, wall):
        """Count one probe result; return a Transition when the upstream changes state."""
        self.latency = latency
        self.last_probe = wall
        name = "%s %s" % (self.service, self.endpoint)
        if ok:
            self.ok += 1
            self.fail = 0
            if self.up or self.ok < check.rise:
                return None
            held = mono - (self.down_mono if self.down_mono is not None else mono)
            if held < hold_down:
                return None
            detail = "%d/%d ok" % (self.ok, check.rise) if self.ok == check.rise else \
                "%d ok in a row, down for %.1fs with a %gs hold-down" % (self.ok, held, hold_down)
            self.up = True
            self.since = wall
            self.down_mono = None
            self.reason = ""
            self.transitions += 1
            return Transition("up", "%s UP (%s)" % (name, detail))
        self.fail += 1
        self.ok = 0
        self.last_error = one_line(error or "failed")
        if not self.up or self.fail < check.fall:
            return None
        self.up = False
        self.since = wall
        self.down_mono = mono
        self.reason = one_line(self.last_error, REASON_MAX)
        self.transitions += 1
        return Transition("down", "%s DOWN (%s, %d/%d failed)" % (name, self.last_error, self.fail, check.fall))

    def to_json(self):
        return {
            "address": self.address,
            "port": self.port,
            "state": "up" if self.up else "down",
            "since": iso(self.since),
            "since_epoch": round(self.since, 3),
            "reason": self.reason,
            "last_error": self.last_error,
            "ok": self.ok,
            "fail": self.fail,
            "latency": None if self.latency is None else round(self.latency, 6),
            "last_probe": None if self.last_probe is None else iso(self.last_probe),
            "last_probe_epoch": None if self.last_probe is None else round(self.last_probe, 3),
            "transitions": self.transitions,
        }


def is_fail_open(service, states):
    """True when every upstream of the service is down: then all of them are written up."""
    if service.check.type == "none":
        return False
    sts = [states.get(ep) for ep in service.endpoints]
    return all(st is not None and not st.up for st in sts)


def initial_states(cfg, saved, mono, wall):
    """{service: {endpoint: UpstreamState}} for every configured upstream. Each starts up unless the saved
    state (the state file's "services", or {}) says it is down; a down one keeps its since and reason, and
    its hold-down counts from its since. Type none is always up."""
    result = {}
    saved = saved if isinstance(saved, dict) else {}
    for svc in cfg.services:
        per = {}
        old_svc = saved.get(svc.name)
        old_ups = old_svc.get("upstreams") if isinstance(old_svc, dict) else None
        old_ups = old_ups if isinstance(old_ups, dict) else {}
        for addr in svc.upstreams:
            st = UpstreamState(service=svc.name, address=addr, port=svc.port, since=wall)
            old = old_ups.get(svc.endpoint(addr))
            if isinstance(old, dict):
                since = old.get("since_epoch")
                if _is_number(since) and 0 < since <= wall + 86400:
                    st.since = float(since)
                if _is_number(old.get("transitions")):
                    st.transitions = int(old["transitions"])
                if old.get("state") == "down" and svc.check.type != "none":
                    st.up = False
                    st.down_mono = mono - max(0.0, wall - st.since)
                    reason = old.get("reason") if isinstance(old.get("reason"), str) else ""
                    st.reason = one_line(reason or "down in the state file", REASON_MAX)
                    if isinstance(old.get("last_error"), str):
                        st.last_error = one_line(old["last_error"])
            per[svc.endpoint(addr)] = st
        result[svc.name] = per
    return result


# ---------------------------------------------------------------------------------------------------------
# the include files
# ---------------------------------------------------------------------------------------------------------

def render_service(service, states):
    """The body of the service's nginx `upstream` block (valid in http and stream). Byte-identical for the
    same membership: a down line shows when and why it went down, both fixed at the transition."""
    lines = ["# managed by netops-healthcheck: membership of service %s (do not edit)\n" % service.name]
    fail_open = is_fail_open(service, states)
    if fail_open:
        lines.append("# FAIL OPEN: every server of this service fails its health check; all are kept in service\n")
    for addr in service.upstreams:
        ep = service.endpoint(addr)
        params = service.params_of(addr)
        params = " " + params if params else ""
        st = states.get(ep)
        if st is not None and not st.up and not fail_open and service.check.type != "none":
            reason = one_line(st.reason or "failed", REASON_MAX)
            lines.append("server %s%s down;   # down since %s: %s\n" % (ep, params, iso(st.since), reason))
        else:
            lines.append("server %s%s;\n" % (ep, params))
    return "".join(lines)


def render_all(cfg, states):
    """{path: text} for every service."""
    return {cfg.include_path(svc): render_service(svc, states.get(svc.name, {})) for svc in cfg.services}


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def atomic_write(path, data, mode=0o644):
    """Write data (bytes or str) to path atomically: a temporary file in the same directory, fsync,
    chmod, rename, fsync of the directory. The temporary name starts with a dot and does not end in
    .conf/.json/.prom, so no glob of the real files picks it up."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def changed_files(rendered):
    """Paths whose content on disk differs from the rendered text."""
    changed = []
    for path, text in rendered.items():
        try:
            same = read_bytes(path) == text.encode("utf-8")
        except OSError:
            same = False  # unreadable: writing it will say why
        if not same:
            changed.append(path)
    return sorted(changed)


def restore_files(backups):
    """Put back the previous content of each file (None: there was no file)."""
    errors = []
    for path, old in backups.items():
        try:
            if old is None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            else:
                atomic_write(path, old)
        except OSError as ex:
            errors.append("%s: %s" % (path, ex.strerror or ex))
    return errors


# ---------------------------------------------------------------------------------------------------------
# the state file and the Prometheus textfile
# ---------------------------------------------------------------------------------------------------------

def load_state_file(path):
    """(the decoded state document or {}, a warning or "")."""
    raw = read_bytes(path) if path else None
    if raw is None:
        return {}, ""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as ex:
        return {}, "state file %s is unreadable (%s): every upstream starts up" % (path, ex)
    if not isinstance(doc, dict):
        return {}, "state file %s is not a JSON object: every upstream starts up" % path
    return doc, ""


def _label(value):
    return str(value).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def prometheus_text(doc):
    """The Prometheus exposition text for a state document (the one written to the state file)."""
    out = []

    def family(name, kind, text):
        out.append("# HELP %s %s\n# TYPE %s %s\n" % (name, text, name, kind))

    services = doc.get("services", {})
    family("netops_healthcheck_upstream_up", "gauge", "1 if the upstream passes its health check, 0 if it is marked down.")
    for sname, svc in services.items():
        for ep, up in svc["upstreams"].items():
            out.append('netops_healthcheck_upstream_up{service="%s",upstream="%s"} %d\n' % (_label(sname), _label(ep), up["state"] == "up"))
    family("netops_healthcheck_transitions_total", "counter", "Up/down transitions of the upstream since the checker started.")
    for sname, svc in services.items():
        for ep, up in svc["upstreams"].items():
            out.append('netops_healthcheck_transitions_total{service="%s",upstream="%s"} %d\n' % (_label(sname), _label(ep), up["transitions_run"]))
    family("netops_healthcheck_probe_duration_seconds", "gauge", "Duration of the last probe of the upstream (good or failed).")
    for sname, svc in services.items():
        for ep, up in svc["upstreams"].items():
            if up["latency"] is not None:
                out.append('netops_healthcheck_probe_duration_seconds{service="%s",upstream="%s"} %.6f\n' % (_label(sname), _label(ep), up["latency"]))
    family("netops_healthcheck_fail_open", "gauge", "1 while every upstream of the service fails and all are kept in service.")
    for sname, svc in services.items():
        out.append('netops_healthcheck_fail_open{service="%s"} %d\n' % (_label(sname), bool(svc["fail_open"])))
    family("netops_healthcheck_reloads_total", "counter", "nginx reloads done by the checker since it started.")
    out.append("netops_healthcheck_reloads_total %d\n" % doc.get("reload_count", 0))
    family("netops_healthcheck_reload_failures_total", "counter", "Failed applies (nginx -t or the reload failed) since the checker started.")
    out.append("netops_healthcheck_reload_failures_total %d\n" % doc.get("reload_failures", 0))
    if doc.get("last_reload_epoch"):
        family("netops_healthcheck_last_reload_timestamp_seconds", "gauge", "Time of the last nginx reload.")
        out.append("netops_healthcheck_last_reload_timestamp_seconds %.3f\n" % doc["last_reload_epoch"])
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------
# coalescing and rate limiting of applies (pure; the caller passes the clock)
# ---------------------------------------------------------------------------------------------------------

class ApplyScheduler:
    """When to write the files and reload. A change opens a window of `coalesce` seconds, counted from the
    first change not yet applied (so steady flapping cannot postpone an apply forever); changes inside it
    join it. An apply that ran nginx's commands locks the next one out for `min_reload_interval` seconds; a
    change arriving during the lock-out is applied when it ends (or when its own window ends, if later)."""

    def __init__(self, coalesce, min_interval):
        self.coalesce = coalesce
        self.min_interval = min_interval
        self.pending_since = None
        self.retry_at = None
        self.last_apply = None

    def note_change(self, now):
        if self.pending_since is None:
            self.pending_since = now

    def retry(self, at):
        self.retry_at = at if self.retry_at is None else min(self.retry_at, at)

    def due_at(self):
        candidates = []
        if self.pending_since is not None:
            candidates.append(self.pending_since + self.coalesce)
        if self.retry_at is not None:
            candidates.append(self.retry_at)
        if not candidates:
            return None
        due = min(candidates)
        if self.last_apply is not None:
            due = max(due, self.last_apply + self.min_interval)
        return due

    def is_due(self, now):
        due = self.due_at()
        return due is not None and now >= due

    def begin(self):
        """An apply starts: it takes every change noted so far; later ones make a new window."""
        self.pending_since = None
        self.retry_at = None

    def finished(self, started, ran_commands):
        if ran_commands:
            self.last_apply = started


# ---------------------------------------------------------------------------------------------------------
# applying: write the changed files, nginx -t (put them back if it fails), reload
# ---------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ApplyResult:
    changed: list  # paths written (and kept unless the test failed)
    ran: bool = False  # nginx's commands ran
    test_ok: bool | None = None
    reload_ok: bool | None = None
    error: str = ""
    test_seconds: float = 0.0
    reload_seconds: float = 0.0


async def run_command(argv, timeout=COMMAND_TIMEOUT):
    """(returncode, stdout, stderr) of a command, with LC_ALL=C; killed after timeout or when cancelled."""
    env = dict(os.environ, LC_ALL="C")
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
    except OSError as ex:
        return 127, "", "cannot run %s: %s" % (argv[0], ex.strerror or ex)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        return -1, "", "%s timed out after %gs and was killed" % (argv[0], timeout)
    except asyncio.CancelledError:
        _kill(proc)
        await proc.wait()
        raise
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def _kill(proc):
    try:
        proc.kill()
    except ProcessLookupError:
        pass


def _command_error(argv, rc, out, err):
    text = one_line(err or out or "no output")
    return "`%s` exited %s: %s" % (" ".join(argv), rc, text)


async def apply_files(cfg, rendered, runner, reload_pending=False, clock=time.monotonic):
    """Write the files whose content changed, run nginx_test, and nginx_reload when it passes. When the test
    fails (or writing fails, or the apply is cancelled before the test passed) the previous files are put back.
    Nothing changed and no reload pending: nothing runs."""
    changed = changed_files(rendered)
    result = ApplyResult(changed=changed)
    if not changed and not reload_pending:
        return result
    backups = {}
    tested = False
    try:
        if changed:
            os.makedirs(cfg.include_dir, mode=0o755, exist_ok=True)
        for path in changed:
            backups[path] = read_bytes(path)
            atomic_write(path, rendered[path])
        result.ran = True
        start = clock()
        rc, out, err = await runner(list(cfg.nginx_test))
        result.test_seconds = clock() - start
        tested = rc == 0
        result.test_ok = tested
        if not tested:
            result.error = _command_error(cfg.nginx_test, rc, out, err)
    except OSError as ex:
        result.error = "cannot write %s: %s" % (getattr(ex, "filename", "") or "the include files", ex.strerror or ex)
    finally:
        if not tested:
            problems = restore_files(backups)
            if problems:
                result.error += "; could not put back: " + "; ".join(problems)
    if not tested:
        return result
    start = clock()
    rc, out, err = await runner(list(cfg.nginx_reload))
    result.reload_seconds = clock() - start
    result.reload_ok = rc == 0
    if rc != 0:
        result.error = _command_error(cfg.nginx_reload, rc, out, err)
    return result


# ---------------------------------------------------------------------------------------------------------
# probes (asyncio, non-blocking sockets; the caller bounds each probe with the check's timeout)
# ---------------------------------------------------------------------------------------------------------

class ProbeFailure(Exception):
    """The upstream answered, but not as expected."""


def _family(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _new_socket(address, kind, source):
    sock = socket.socket(_family(address), kind)
    try:
        sock.setblocking(False)
        if source:
            sock.bind((source, 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def _udp_exchange(check, address, port, payload):
    """Send one datagram from a connected socket and return the first reply. Connected: an ICMP port
    unreachable fails the receive at once with ECONNREFUSED (a fast fail), and only the upstream's
    address and port can answer."""
    loop = asyncio.get_running_loop()
    with _new_socket(address, socket.SOCK_DGRAM, check.source) as sock:
        sock.connect((address, port))
        await loop.sock_sendall(sock, payload)
        return await loop.sock_recv(sock, 65535)


async def _tcp_connect(check, address, port):
    loop = asyncio.get_running_loop()
    sock = _new_socket(address, socket.SOCK_STREAM, check.source)
    try:
        await loop.sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _recv_exactly(sock, count):
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < count:
        chunk = await loop.sock_recv(sock, count - len(data))
        if not chunk:
            raise ProbeFailure("connection closed after %d of %d bytes" % (len(data), count))
        data += chunk
    return data


async def _recv_until(sock, done, what, note):
    """Read until done(data) is true; ProbeFailure at EOF or past READ_MAX. note["received"] keeps what came,
    for the message of a timeout."""
    loop = asyncio.get_running_loop()
    data = b""
    while not done(data):
        if len(data) > READ_MAX:
            raise ProbeFailure("%s: no match in the first %d bytes" % (what, READ_MAX))
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ProbeFailure("%s: connection closed after %d bytes %s" % (what, len(data), _preview(data)))
        data += chunk
        note["received"] = data
    return data


def _preview(data, limit=60):
    return repr(bytes(data[:limit])) + ("..." if len(data) > limit else "")


def _check_rcode(check, rcode):
    if rcode not in check.dns_rcodes:
        raise ProbeFailure("DNS rcode %s, expected %s" % (DNS_RCODE_NAMES.get(rcode, str(rcode)),
                                                          "/".join(DNS_RCODE_NAMES[c] for c in check.dns_rcodes)))


async def probe_dns(check, address, port, note):
    qid = secrets.randbits(16)
    query = build_dns_query(qid, check.dns_name, check.dns_type)
    if check.dns_proto == "tcp":
        loop = asyncio.get_running_loop()
        with await _tcp_connect(check, address, port) as sock:
            await loop.sock_sendall(sock, struct.pack("!H", len(query)) + query)
            (length,) = struct.unpack("!H", await _recv_exactly(sock, 2))
            reply = await _recv_exactly(sock, length)
    else:
        reply = await _udp_exchange(check, address, port, query)
    try:
        rcode, _flags = parse_dns_reply(reply, qid, check.dns_name, check.dns_type)
    except DNSError as ex:
        raise ProbeFailure("bad DNS reply: %s" % ex)
    _check_rcode(check, rcode)


def _expect_re(check):
    return re.compile(check.expect.encode("utf-8"), re.DOTALL) if check.expect else None


async def probe_udp(check, address, port, note):
    reply = await _udp_exchange(check, address, port, check.send)
    pattern = _expect_re(check)
    if pattern is not None and not pattern.search(reply):
        raise ProbeFailure("reply %s does not match %r" % (_preview(reply), check.expect))


async def probe_tcp(check, address, port, note):
    loop = asyncio.get_running_loop()
    with await _tcp_connect(check, address, port) as sock:
        if check.send:
            await loop.sock_sendall(sock, check.send)
        pattern = _expect_re(check)
        if pattern is not None:
            await _recv_until(sock, pattern.search, "reply does not match %r" % check.expect, note)


def http_host(check, address, port):
    if check.http_host:
        return check.http_host
    host = "[%s]" % address if ":" in address else address
    return host if port == 80 else "%s:%d" % (host, port)


_STATUS_RE = re.compile(rb"^HTTP/\d(?:\.\d)? (\d{3})(?: |\r|$)")


async def probe_http(check, address, port, note):
    loop = asyncio.get_running_loop()
    request = ("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: %s/%s\r\nAccept: */*\r\nConnection: close\r\n\r\n" % (
        check.http_path, http_host(check, address, port), PROG, VERSION)).encode("latin-1", "replace")
    with await _tcp_connect(check, address, port) as sock:
        await loop.sock_sendall(sock, request)
        data = await _recv_until(sock, lambda d: b"\n" in d, "no HTTP status line", note)
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    match = _STATUS_RE.match(line)
    if not match:
        raise ProbeFailure("malformed HTTP status line %s" % _preview(line))
    status = int(match.group(1))
    if status not in check.http_status:
        raise ProbeFailure("HTTP status %d, expected %s" % (status, "/".join(str(s) for s in check.http_status)))


PROBES = {"dns": probe_dns, "udp": probe_udp, "tcp": probe_tcp, "http": probe_http}


async def run_probe(check, address, port, clock=time.monotonic):
    """(ok, error, seconds) of one probe bounded by check.timeout. Every exception is a failed probe with
    its cause; only cancellation propagates."""
    start = clock()
    error = ""
    note = {}
    try:
        async with asyncio.timeout(check.timeout):
            await PROBES[check.type](check, address, port, note)
    except TimeoutError:
        error = "timeout after %gs" % check.timeout
        if note.get("received"):
            error += " (received %s, no match)" % _preview(note["received"])
    except ProbeFailure as ex:
        error = str(ex)
    except ConnectionRefusedError:
        error = "connection refused"
    except OSError as ex:
        error = ex.strerror.lower() if ex.strerror else "%s: %s" % (type(ex).__name__, ex)
    except Exception as ex:
        error = "probe error: %s: %s" % (type(ex).__name__, ex)
    return not error, error, clock() - start


# ---------------------------------------------------------------------------------------------------------
# logging: one line per event on stdout (the journal)
# ---------------------------------------------------------------------------------------------------------

PRIORITIES = {"crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}


def _stream_is_journal(stream):
    want = os.environ.get("JOURNAL_STREAM", "")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == "%d:%d" % (st.st_dev, st.st_ino)


class Log:
    """Under systemd (stdout is the journal stream) each line carries a <N> priority prefix for the journal;
    elsewhere a UTC timestamp and the level."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stdout
        self.journal = _stream_is_journal(self.stream)

    def __call__(self, priority, message):
        message = one_line(message, 4000)
        if self.journal:
            line = "<%d>%s\n" % (PRIORITIES[priority], message)
        else:
            now = time.time()
            line = "%s.%03dZ %s %s\n" % (iso(now)[:-1], int(now * 1000) % 1000, priority.upper(), message)
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            pass


def sd_notify(message):
    """Tell systemd (Type=notify) when NOTIFY_SOCKET is set; harmless otherwise."""
    target = os.environ.get("NOTIFY_SOCKET", "")
    if not target:
        return
    if target.startswith("@"):
        target = "\0" + target[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(target)
            sock.sendall(message.encode("utf-8"))
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------------------
# the daemon
# ---------------------------------------------------------------------------------------------------------

class Daemon:
    """One asyncio task per upstream (probes), one applier, one state writer; signals stop (TERM, INT) or
    re-read the configuration (HUP)."""

    def __init__(self, cfg, log=None, runner=run_command, mono=time.monotonic, wall=time.time):
        self.cfg = cfg
        self.log = log or Log()
        self.runner = runner
        self.mono = mono
        self.wall = wall
        self.started = wall()
        self.sched = ApplyScheduler(cfg.coalesce, cfg.min_reload_interval)
        self.states = {}
        self.fail_open = {}  # service -> wall time it entered fail open
        self.transitions_run = {}  # (service, endpoint) -> transitions since this process started
        self.reload_count = 0
        self.reload_failures = 0
        self.last_reload = None
        self.last_reload_duration = None
        self.last_reload_error = ""
        self.last_reload_error_time = None
        self.reload_pending = False
        self.probe_tasks = {}
        self.stopping = None
        self.wake = None
        self.state_urgent = None
        self.reread_lock = None
        self.state_dirty = True

    # -- state ------------------------------------------------------------------------------------------

    def load_initial_state(self):
        doc, warning = load_state_file(self.cfg.state_file)
        if warning:
            self.log("warning", warning)
        self.states = initial_states(self.cfg, doc.get("services", {}), self.mono(), self.wall())
        for svc in self.cfg.services:
            for ep, st in self.states[svc.name].items():
                if not st.up:
                    self.log("notice", "%s %s starts DOWN (state file: down since %s: %s)" % (svc.name, ep, iso(st.since), st.reason))
            self.update_fail_open(svc, initial=True)
        # the previous fail-open start time survives a restart while the service is still failing
        old = doc.get("services", {}) if isinstance(doc.get("services"), dict) else {}
        for name in self.fail_open:
            since = old.get(name, {}).get("fail_open_since_epoch") if isinstance(old.get(name), dict) else None
            if _is_number(since):
                self.fail_open[name] = float(since)

    def update_fail_open(self, svc, initial=False):
        now_open = is_fail_open(svc, self.states.get(svc.name, {}))
        was_open = svc.name in self.fail_open
        if now_open and not was_open:
            self.fail_open[svc.name] = self.wall()
            self.log("crit", "%s FAIL OPEN: all %d upstreams fail their health checks; every server stays in nginx until one recovers%s" % (
                svc.name, len(svc.upstreams), " (from the state file)" if initial else ""))
        elif was_open and not now_open:
            del self.fail_open[svc.name]
            ups = [ep for ep, st in self.states[svc.name].items() if st.up]
            self.log("notice", "%s fail open ended: %s up again; the failing ones are marked down" % (svc.name, ", ".join(ups) or "service removed"))

    def state_document(self):
        services = {}
        for svc in self.cfg.services:
            ups = {}
            for ep, st in self.states.get(svc.name, {}).items():
                entry = st.to_json()
                entry["transitions_run"] = self.transitions_run.get((svc.name, ep), 0)
                ups[ep] = entry
            since = self.fail_open.get(svc.name)
            services[svc.name] = {
                "check": svc.check.type,
                "include": self.cfg.include_path(svc),
                "fail_open": svc.name in self.fail_open,
                "fail_open_since": None if since is None else iso(since),
                "fail_open_since_epoch": None if since is None else round(since, 3),
                "upstreams": ups,
            }
        now = self.wall()
        return {
            "version": 1,
            "pid": os.getpid(),
            "config": self.cfg.path,
            "started": iso(self.started),
            "started_epoch": round(self.started, 3),
            "updated": iso(now),
            "updated_epoch": round(now, 3),
            "reload_count": self.reload_count,
            "reload_failures": self.reload_failures,
            "reload_pending": self.reload_pending,
            "last_reload": None if self.last_reload is None else iso(self.last_reload),
            "last_reload_epoch": None if self.last_reload is None else round(self.last_reload, 3),
            "last_reload_duration": None if self.last_reload_duration is None else round(self.last_reload_duration, 3),
            "last_reload_error": self.last_reload_error,
            "last_reload_error_time": None if self.last_reload_error_time is None else iso(self.last_reload_error_time),
            "services": services,
        }

    def state_payloads(self):
        """[(path, text)]: the state file and the textfile, from the state as it is now."""
        doc = self.state_document()
        self.state_dirty = False
        targets = [(self.cfg.state_file, json.dumps(doc, indent=1, sort_keys=True) + "\n")]
        if self.cfg.textfile:
            targets.append((self.cfg.textfile, prometheus_text(doc)))
        return targets

    @staticmethod
    def write_payloads(targets):
        """Write each file atomically; return the errors (safe to run in a thread)."""
        errors = []
        for path, text in targets:
            try:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                atomic_write(path, text)
            except OSError as ex:
                errors.append("cannot write %s: %s" % (path, ex.strerror or ex))
        return errors

    def write_state(self):
        for error in self.write_payloads(self.state_payloads()):
            self.log("err", error)

    def mark_state(self, urgent):
        self.state_dirty = True
        if urgent and self.state_urgent is not None:
            self.state_urgent.set()

    def status_line(self):
        total = sum(len(s) for s in self.states.values())
        up = sum(1 for s in self.states.values() for st in s.values() if st.up)
        return "%d services, %d/%d upstreams up, %d reloads%s" % (
            len(self.cfg.services), up, total, self.reload_count, ", fail open: " + ", ".join(sorted(self.fail_open)) if self.fail_open else "")

    # -- probing ----------------------------------------------------------------------------------------

    def on_result(self, svc, st, ok, error, latency):
        transition = st.record(ok, error, latency, svc.check, self.cfg.hold_down, self.mono(), self.wall())
        if transition is None:
            self.mark_state(False)
            return
        key = (svc.name, st.endpoint)
        self.transitions_run[key] = self.transitions_run.get(key, 0) + 1
        self.log("warning" if transition.kind == "down" else "notice", transition.message)
        self.update_fail_open(svc)
        self.change()
        self.mark_state(True)
        sd_notify("STATUS=" + self.status_line())

    def change(self):
        self.sched.note_change(self.mono())
        if self.wake is not None:
            self.wake.set()

    async def prober(self, svc, st):
        check = svc.check
        # spread the first probes a little, so the services' sockets do not all open in the same instant
        next_at = self.mono() + secrets.randbelow(1000) / 1000.0 * min(0.1, check.interval / 10)
        while True:
            delay = next_at - self.mono()
            if delay > 0:
                await asyncio.sleep(delay)
            start = self.mono()
            try:
                ok, error, latency = await run_probe(check, st.address, st.port)
                self.on_result(svc, st, ok, error, latency)
            except Exception as ex:  # a bug must not stop the probes of this upstream
                self.log("err", "%s %s: internal error after a probe: %s: %s" % (svc.name, st.endpoint, type(ex).__name__, ex))
            next_at = max(start + check.interval, self.mono())

    def start_probes(self):
        for svc in self.cfg.services:
            if svc.check.type == "none":
                continue
            for ep, st in self.states[svc.name].items():
                self.probe_tasks[(svc.name, ep)] = asyncio.create_task(self.prober(svc, st), name="probe %s %s" % (svc.name, ep))

    async def stop_probes(self):
        tasks = list(self.probe_tasks.values())
        self.probe_tasks = {}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- applying ---------------------------------------------------------------------------------------

    async def applier(self):
        while True:
            due = self.sched.due_at()
            now = self.mono()
            if due is None or due > now:
                self.wake.clear()
                try:
                    async with asyncio.timeout(None if due is None else due - now):
                        await self.wake.wait()
                except TimeoutError:
                    pass
                continue
            try:
                await self.apply_once()
            except Exception as ex:  # a bug must not stop the applier: log it and try again later
                self.log("err", "internal error while applying: %s: %s; retrying in %gs" % (type(ex).__name__, ex, RETRY_AFTER))
                self.sched.begin()
                self.sched.retry(self.mono() + RETRY_AFTER)

    async def apply_once(self):
        started = self.mono()
        self.sched.begin()
        rendered = render_all(self.cfg, self.states)
        by_path = {self.cfg.include_path(s): s.name for s in self.cfg.services}
        result = await apply_files(self.cfg, rendered, self.runner, self.reload_pending, clock=self.mono)
        self.sched.finished(started, result.ran)
        if not result.ran and not result.error:
            return result
        names = ", ".join(by_path.get(p, p) for p in result.changed) or "none"
        count = "%d service%s changed (%s)" % (len(result.changed), "" if len(result.changed) == 1 else "s", names)
        if result.test_ok and result.reload_ok:
            self.reload_count += 1
            self.last_reload = self.wall()
            self.last_reload_duration = result.reload_seconds
            self.reload_pending = False
            self.log("notice", "reload: %s, nginx -t ok (%.2fs), reload took %.2fs" % (count, result.test_seconds, result.reload_seconds))
        else:
            self.reload_failures += 1
            self.last_reload_error = result.error
            self.last_reload_error_time = self.wall()
            self.sched.retry(self.mono() + RETRY_AFTER)
            if result.test_ok:
                # the files are in place and valid; nginx still runs the previous membership
                self.reload_pending = True
                self.log("err", "reload FAILED: %s, nginx -t ok, but %s; retrying at the next change or in %gs" % (count, result.error, RETRY_AFTER))
            elif result.test_ok is False:
                self.log("err", "reload skipped: %s, but nginx -t FAILED, the previous files are back in place; "
                                "retrying at the next change or in %gs: %s" % (count, RETRY_AFTER, result.error))
            else:
                self.log("err", "reload skipped: %s; retrying at the next change or in %gs" % (result.error, RETRY_AFTER))
        self.mark_state(True)
        sd_notify("STATUS=" + self.status_line())
        return result

    # -- the state writer -------------------------------------------------------------------------------

    async def state_writer(self):
        while True:
            try:
                async with asyncio.timeout(STATE_PERIOD):
                    await self.state_urgent.wait()
                # transitions often come in bursts (a host with several services dies): take them together
                await asyncio.sleep(0.05)
            except TimeoutError:
                pass
            self.state_urgent.clear()
            if not self.state_dirty:
                continue
            try:
                # the document is built here, in the loop; only the writing runs in a thread. A stop waits for
                # the write to end, so the final state written at the stop is the last one.
                writing = asyncio.ensure_future(asyncio.to_thread(self.write_payloads, self.state_payloads()))
                try:
                    errors = await asyncio.shield(writing)
                except asyncio.CancelledError:
                    await writing
                    raise
            except Exception as ex:
                errors = ["internal error while writing the state: %s: %s" % (type(ex).__name__, ex)]
            for error in errors:
                self.log("err", error)

    # -- configuration re-read (SIGHUP) -----------------------------------------------------------------

    async def reread_config(self):
        async with self.reread_lock:
            await self._reread_config()

    async def _reread_config(self):
        sd_notify("RELOADING=1")
        try:
            new = load_config(self.cfg.path)
        except ConfigError as ex:
            self.log("err", "SIGHUP: configuration %s not applied, the previous one stays: %s" % (self.cfg.path, ex))
            sd_notify("READY=1")
            return
        await self.stop_probes()
        old_states = self.states
        kept = added = 0
        states = {}
        for svc in new.services:
            per = {}
            for addr in svc.upstreams:
                ep = svc.endpoint(addr)
                st = old_states.get(svc.name, {}).get(ep)
                if st is not None and svc.check.type != "none":
                    kept += 1
                else:
                    st = UpstreamState(service=svc.name, address=addr, port=svc.port, since=self.wall())
                    added += 1
                per[ep] = st
            states[svc.name] = per
        removed = sum(len(s) for s in old_states.values()) - kept
        self.cfg = new
        self.states = states
        self.sched.coalesce = new.coalesce
        self.sched.min_interval = new.min_reload_interval
        for name in list(self.fail_open):
            if name not in states:
                del self.fail_open[name]
        for svc in new.services:
            self.update_fail_open(svc)
        self.start_probes()
        self.log("notice", "SIGHUP: configuration re-read: %d services; upstreams: %d kept with their state, %d new, %d gone" % (
            len(new.services), kept, added, removed))
        self.change()
        self.mark_state(True)
        sd_notify("READY=1\nSTATUS=" + self.status_line())

    # -- main -------------------------------------------------------------------------------------------

    async def main(self):
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
        self.state_urgent = asyncio.Event()
        self.reread_lock = asyncio.Lock()
        hup = []
        signal_name = []

        def on_stop(signame):
            signal_name.append(signame)
            self.stopping.set()

        def on_hup():
            hup.append(asyncio.create_task(self.reread_config()))

        loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        self.load_initial_state()
        upstreams = sum(len(s.upstreams) for s in self.cfg.services)
        self.log("notice", "started: pid %d, config %s, %d services, %d upstreams; include files in %s" % (
            os.getpid(), self.cfg.path, len(self.cfg.services), upstreams, self.cfg.include_dir))
        self.write_state()
        # the first apply writes whatever differs from the files on disk (usually nothing: the role ran render)
        self.change()
        self.start_probes()
        others = [asyncio.create_task(self.applier(), name="applier"), asyncio.create_task(self.state_writer(), name="state writer")]
        sd_notify("READY=1\nSTATUS=" + self.status_line())
        await self.stopping.wait()
        sd_notify("STOPPING=1")
        for task in hup + others:
            task.cancel()
        await asyncio.gather(*(hup + others), return_exceptions=True)
        await self.stop_probes()
        self.write_state()
        self.log("notice", "stopped (%s): %s" % (signal_name[0] if signal_name else "stop", self.status_line()))
        return EXIT_OK


# ---------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------

def cmd_check_config(cfg, args):
    upstreams = sum(len(s.upstreams) for s in cfg.services)
    print("%s: configuration %s is valid: %d services, %d upstreams" % (PROG, cfg.path, len(cfg.services), upstreams))
    return EXIT_OK


def cmd_render(cfg, args):
    doc, warning = load_state_file(cfg.state_file)
    if warning:
        print("%s: %s" % (PROG, warning), file=sys.stderr)
    states = initial_states(cfg, doc.get("services", {}), time.monotonic(), time.time())
    rendered = render_all(cfg, states)
    changed = changed_files(rendered)
    if not args.dry_run and changed:
        try:
            os.makedirs(cfg.include_dir, mode=0o755, exist_ok=True)
            for path in changed:
                atomic_write(path, rendered[path])
        except OSError as ex:
            print("%s: cannot write %s: %s" % (PROG, getattr(ex, "filename", "") or cfg.include_dir, ex.strerror or ex), file=sys.stderr)
            return EXIT_ERROR
    print(json.dumps({"changed": bool(changed), "files": changed}))
    return EXIT_OK


def cmd_run(cfg, args):
    return asyncio.run(Daemon(cfg).main())


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description="Active health checks for the nginx upstreams of netops.ip_transparency.")
    parser.add_argument("--version", action="version", version="%s %s" % (PROG, VERSION))
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the checker (the daemon)"),
                       ("render", "write the include files from the configuration and the state file, once"),
                       ("check-config", "validate the configuration")):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", required=True, help="the JSON configuration")
        if name == "render":
            cmd.add_argument("--dry-run", action="store_true", help="write nothing, report what would change")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as ex:
        print("%s: configuration %s: %s" % (PROG, args.config, ex), file=sys.stderr)
        return EXIT_CONFIG
    handler = {"run": cmd_run, "render": cmd_render, "check-config": cmd_check_config}[args.command]
    return handler(cfg, args)


if __name__ == "__main__":
    sys.exit(main())
