"""Helpers for the scenarios' testinfra checks: reach any lab host, parse the article's replies,
and find which upstream logged a DNS query and from which address."""

import re
import uuid

import testinfra

VIP = "192.168.99.10"
CLIENT = "192.168.99.1"
UPSTREAMS = {
    "upstream1": "172.16.0.11",
    "upstream2": "172.16.0.12",
    "upstream3": "172.16.0.13",
    "upstream4": "172.16.0.14",
}
HELLO = re.compile(
    r"^Hello from (?P<name>\S+)\. You connected from (?P<src>[0-9.]+):(?P<sport>\d+) to (?P<dst>[0-9.]+):(?P<dport>\d+)$"
)


def lab_host(name):
    """A testinfra host for a lab host, through the docker connection."""
    return testinfra.get_host("docker://ipt-%s" % name)


def parse_hello(text):
    match = HELLO.match(text.strip())
    assert match, "not the upstream's reply: %r" % text
    return match.groupdict()


def unique_name():
    return "probe-%s.example.com" % uuid.uuid4().hex[:12]


def query_sources(name):
    """Map upstream -> list of client addresses its DNS server logged for query ``name``."""
    seen = {}
    pattern = re.compile(r"client @\S+ ([0-9a-f.:]+)#(\d+) \(%s\)" % re.escape(name))
    for upstream in UPSTREAMS:
        log = lab_host(upstream).check_output("journalctl -u named --no-pager -n 2000 -o cat")
        sources = [m.group(1) for m in pattern.finditer(log)]
        if sources:
            seen[upstream] = sources
    return seen
