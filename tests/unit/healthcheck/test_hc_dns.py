"""The DNS query and reply codec of the health checker, and the payload escapes (pure)."""

import random
import struct

import pytest

from .hcutil import dns_reply, hc

QID = 0x1234


def query(name="www.example.com", qtype=1, qid=QID):
    return hc.build_dns_query(qid, name, qtype)


def test_query_bytes_are_a_standard_recursive_query():
    q = query()
    assert q[:12] == struct.pack("!HHHHHH", QID, 0x0100, 1, 0, 0, 0)  # RD=1, one question
    assert q[12:] == b"\x03www\x07example\x03com\x00" + struct.pack("!HH", 1, 1)


def test_query_without_recursion_desired():
    assert hc.build_dns_query(QID, "example.com", 1, rd=False)[2:4] == b"\x00\x00"


@pytest.mark.parametrize("name", [".", ""])
def test_root_name_is_one_zero_byte(name):
    assert query(name, 6)[12:] == b"\x00" + struct.pack("!HH", 6, 1)


def test_trailing_dot_is_the_same_name():
    assert query("www.example.com.") == query("www.example.com")


@pytest.mark.parametrize("name", ["a..b", "x" * 64 + ".com", ".".join(["abcdefgh"] * 32)])
def test_invalid_names(name):
    with pytest.raises(ValueError):
        hc.encode_dns_name(name)


def test_good_reply():
    rcode, flags = hc.parse_dns_reply(dns_reply(query()), QID, "www.example.com", 1)
    assert rcode == 0 and flags & 0x8000


def test_reply_matches_the_question_case_insensitively():
    q = query("WWW.Example.COM")
    assert hc.parse_dns_reply(dns_reply(q), QID, "www.example.com.", 1)[0] == 0


def test_rcode_is_returned():
    assert hc.parse_dns_reply(dns_reply(query(), rcode=2), QID, "www.example.com", 1)[0] == 2


def test_root_question_reply():
    q = query(".", 6)
    assert hc.parse_dns_reply(dns_reply(q, rcode=5), QID, ".", 6)[0] == 5


def test_compressed_question_name_is_followed():
    # a question whose name is a pointer to a copy of the name placed after it
    name = b"\x03www\x07example\x03com\x00"
    header = struct.pack("!HHHHHH", QID, 0x8180, 1, 0, 0, 0)
    msg = header + b"\xc0\x12" + struct.pack("!HH", 1, 1) + name
    assert hc.parse_dns_reply(msg, QID, "www.example.com", 1)[0] == 0


MALFORMED = [
    ("short", lambda r: r[:11], "short reply"),
    ("empty", lambda r: b"", "short reply"),
    ("wrong id", lambda r: struct.pack("!H", QID ^ 1) + r[2:], "does not match"),
    ("not a reply", lambda r: r[:2] + struct.pack("!H", struct.unpack("!H", r[2:4])[0] & 0x7FFF) + r[4:], "QR=0"),
    ("opcode", lambda r: r[:2] + struct.pack("!H", struct.unpack("!H", r[2:4])[0] | 0x2000) + r[4:], "opcode"),
    ("no question", lambda r: r[:4] + b"\x00\x00" + r[6:12], "0 questions"),
    ("two questions", lambda r: r[:4] + b"\x00\x02" + r[6:], "2 questions"),
    ("name past end", lambda r: r[:12] + b"\x03ww", "past the end"),
    ("label length past end", lambda r: r[:12] + b"\x3f" + b"a" * 10, "past the end"),
    ("question type past end", lambda r: r[:12] + b"\x03www\x07example\x03com\x00\x00", "question runs past"),
    ("pointer loop", lambda r: r[:12] + b"\xc0\x0c" + r[-20:], "loop"),
    ("pointer past end", lambda r: r[:12] + b"\xc0", "past the end"),
    ("bad label type", lambda r: r[:12] + b"\x80abc", "label type"),
    ("other name", lambda r: r[:12] + b"\x05other\x07example\x03com\x00" + struct.pack("!HH", 1, 1), "not for the question"),
    ("other type", lambda r: r[:12] + b"\x03www\x07example\x03com\x00" + struct.pack("!HH", 28, 1), "AAAA"),
    ("other class", lambda r: r[:12] + b"\x03www\x07example\x03com\x00" + struct.pack("!HH", 1, 3), "class 3"),
]


@pytest.mark.parametrize("mutate,message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_or_mismatched_replies(mutate, message):
    reply = mutate(dns_reply(query()))
    with pytest.raises(hc.DNSError, match=message):
        hc.parse_dns_reply(reply, QID, "www.example.com", 1)


def test_random_garbage_never_raises_anything_but_dns_error():
    rng = random.Random(7)
    good = dns_reply(query())
    for _attempt in range(3000):
        data = bytearray(good)
        for _byte in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data[:rng.randint(0, len(data))])
        try:
            hc.parse_dns_reply(data, QID, "www.example.com", 1)
        except hc.DNSError:
            pass


@pytest.mark.parametrize("text,expected", [
    ("A", 1), ("aaaa", 28), ("SOA", 6), ("TYPE65", 65), ("type999", 999),
])
def test_dns_type_numbers(text, expected):
    assert hc.dns_type_number(text) == expected


@pytest.mark.parametrize("text", ["", "BOGUS", "TYPE0", "TYPE70000"])
def test_unknown_dns_types(text):
    with pytest.raises(ValueError):
        hc.dns_type_number(text)


@pytest.mark.parametrize("text,expected", [
    ("", b""),
    ("ping", b"ping"),
    ("\\x00\\x01ab\\xff", b"\x00\x01ab\xff"),
    ("line\\r\\n", b"line\r\n"),
    ("a\\\\x41", b"a\\x41"),
    ("\\t\\0", b"\t\x00"),
    ("caf\u00e9", "caf\u00e9".encode("utf-8")),
    ("\\q stays", b"\\q stays"),
])
def test_payload_escapes(text, expected):
    assert hc.unescape_payload(text) == expected
