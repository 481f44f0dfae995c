"""The probes against real sockets on loopback addresses: DNS over UDP and TCP (good, SERVFAIL, wrong ID),
a closed port (ICMP port unreachable: a fast fail), a silent socket (timeout), TCP, HTTP 200/503."""

import asyncio
import socket
import time

import pytest

from .hcutil import HTTPServer, TCPResponder, UDPResponder, check, closed_port, dns_reply, dns_tcp_handler, dns_udp, hc


def probe(chk, port, address="127.0.0.1"):
    return asyncio.run(hc.run_probe(chk, address, port))


@pytest.fixture
def responders():
    started = []
    yield started
    for r in started:
        r.stop()


def test_dns_good_answer(responders):
    r = dns_udp()
    responders.append(r)
    ok, error, latency = probe(check(dns_name="www.example.com", dns_type="A"), r.port)
    assert (ok, error) == (True, "") and 0 <= latency < 0.5
    (peer, query), = r.seen
    assert peer[0] == "127.0.0.1" and query[12:29] == b"\x03www\x07example\x03com\x00" and query[2] & 1  # RD=1


def test_dns_query_ids_are_random(responders):
    r = dns_udp()
    responders.append(r)
    for _attempt in range(5):
        assert probe(check(), r.port)[0]
    assert len({q[:2] for _p, q in r.seen}) >= 4


def test_dns_servfail_fails_unless_allowed(responders):
    r = dns_udp(rcode=2)
    responders.append(r)
    ok, error, _latency = probe(check(), r.port)
    assert not ok and error == "DNS rcode SERVFAIL, expected NOERROR"
    assert probe(check(dns_rcodes=["NOERROR", "SERVFAIL"]), r.port)[0]


@pytest.mark.parametrize("mode,message", [("wrong-id", "does not match the query"), ("not-reply", "QR=0"),
                                          ("short", "short reply"), ("other-name", "not for the question")])
def test_dns_reply_that_does_not_answer_fails(responders, mode, message):
    r = dns_udp(mode=mode)
    responders.append(r)
    ok, error, latency = probe(check(dns_name="www.example.com"), r.port)
    assert not ok and error.startswith("bad DNS reply: ") and message in error and latency < 0.4


def test_closed_udp_port_fails_fast():
    ok, error, latency = probe(check(timeout=0.5), closed_port())
    assert not ok and error == "connection refused"
    assert latency < 0.1  # ICMP port unreachable on the connected socket, not the timeout


def test_silent_udp_socket_times_out(responders):
    r = UDPResponder().start()
    responders.append(r)
    start = time.monotonic()
    ok, error, latency = probe(check(timeout=0.2, interval=1.0), r.port)
    assert not ok and error == "timeout after 0.2s"
    assert 0.19 <= latency < 0.4 and time.monotonic() - start < 0.5
    assert len(r.seen) == 1  # the query did arrive


def test_dns_over_tcp(responders):
    r = TCPResponder(handler=dns_tcp_handler()).start()
    responders.append(r)
    assert probe(check(dns_proto="tcp"), r.port) == (True, "", pytest.approx(0, abs=0.4))
    r2 = TCPResponder(handler=dns_tcp_handler(rcode=5)).start()
    responders.append(r2)
    ok, error, _latency = probe(check(dns_proto="tcp"), r2.port)
    assert not ok and error == "DNS rcode REFUSED, expected NOERROR"


def test_dns_over_tcp_closed_early(responders):
    r = TCPResponder(handler=lambda conn: conn.recv(100)).start()
    responders.append(r)
    ok, error, _latency = probe(check(dns_proto="tcp"), r.port)
    assert not ok and "connection closed after 0 of 2 bytes" in error


def test_udp_send_and_expect(responders):
    r = UDPResponder(handler=lambda data: b"PONG " + data if data.startswith(b"\x00PING") else None).start()
    responders.append(r)
    assert probe(check(type="udp", send="\\x00PING\\n", expect="^PONG \\x00PING"), r.port)[0]
    assert r.seen[-1][1] == b"\x00PING\n"
    ok, error, _latency = probe(check(type="udp", send="\\x00PING", expect="^PANG"), r.port)
    assert not ok and error.startswith("reply b'PONG \\x00PING' does not match '^PANG'")
    ok, error, _latency = probe(check(type="udp", send="other", timeout=0.1, interval=1), r.port)
    assert not ok and error == "timeout after 0.1s"


def test_udp_any_reply_when_no_expect(responders):
    r = UDPResponder(handler=lambda data: b"x").start()
    responders.append(r)
    assert probe(check(type="udp", send="hello"), r.port)[0]


def test_tcp_connect(responders):
    r = TCPResponder().start()
    responders.append(r)
    assert probe(check(type="tcp"), r.port)[0]
    ok, error, latency = probe(check(type="tcp"), closed_port(kind=socket.SOCK_STREAM))
    assert not ok and error == "connection refused" and latency < 0.1


def test_tcp_banner_and_exchange(responders):
    def handler(conn):
        conn.sendall(b"220 ready\r\n")
        if conn.recv(100) == b"QUIT\r\n":
            conn.sendall(b"221 bye\r\n")
    r = TCPResponder(handler=handler).start()
    responders.append(r)
    assert probe(check(type="tcp", expect="^220 "), r.port)[0]
    assert probe(check(type="tcp", send="QUIT\\r\\n", expect="221 bye"), r.port)[0]
    ok, error, _latency = probe(check(type="tcp", expect="^250"), r.port)
    assert not ok and error == "timeout after 0.5s (received b'220 ready\\r\\n', no match)"


def test_http_status(responders):
    server = HTTPServer().start()
    responders.append(server)
    assert probe(check(type="http", http_path="/health"), server.port)[0]
    assert server.hosts[-1] == "127.0.0.1:%d" % server.port
    assert probe(check(type="http", http_host="www.example.com"), server.port)[0]
    assert server.hosts[-1] == "www.example.com"
    server.status = 503
    ok, error, _latency = probe(check(type="http"), server.port)
    assert not ok and error == "HTTP status 503, expected 200"
    assert probe(check(type="http", http_status=[200, 503]), server.port)[0]


def test_http_garbage_status_line(responders):
    r = TCPResponder(handler=lambda conn: (conn.recv(1000), conn.sendall(b"SSH-2.0-OpenSSH\r\n"))).start()
    responders.append(r)
    ok, error, _latency = probe(check(type="http"), r.port)
    assert not ok and error.startswith("malformed HTTP status line b'SSH-2.0")


def test_source_address_is_used(responders):
    r = dns_udp("127.0.0.1")
    responders.append(r)
    assert probe(check(source="127.0.0.2"), r.port)[0]
    assert r.seen[-1][0][0] == "127.0.0.2"


def test_probe_exceptions_are_failures_not_crashes(monkeypatch):
    async def boom(chk, address, port, note):
        raise KeyError("unexpected")
    monkeypatch.setitem(hc.PROBES, "dns", boom)
    ok, error, _latency = probe(check(), 53)
    assert not ok and error == "probe error: KeyError: 'unexpected'"


def test_unreachable_source_is_a_failure():
    ok, error, _latency = probe(check(source="192.0.2.77"), 53)  # not an address of this host: bind fails
    assert not ok and "cannot assign requested address" in error


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6(responders):
    r = UDPResponder("::1", handler=dns_reply).start()
    responders.append(r)
    assert probe(check(), r.port, "::1")[0]
    assert probe(check(), closed_port("::1"), "::1")[1] == "connection refused"


def test_a_slow_upstream_does_not_delay_the_others(responders):
    good = dns_udp()
    silent = UDPResponder().start()
    responders.extend([good, silent])

    async def both():
        finished = {}

        async def one(name, port, chk):
            await hc.run_probe(chk, "127.0.0.1", port)
            finished[name] = time.monotonic()

        start = time.monotonic()
        await asyncio.gather(one("silent", silent.port, check(timeout=0.5)), one("good", good.port, check(timeout=0.5)))
        return finished["good"] - start, finished["silent"] - start

    good_time, silent_time = asyncio.run(both())
    assert good_time < 0.1 and silent_time >= 0.49
