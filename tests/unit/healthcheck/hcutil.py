"""Shared helpers of the health checker's tests: the program loaded by path (its file name has a dash) and
tiny servers on loopback addresses (DNS over UDP and TCP, a silent UDP socket, TCP, HTTP)."""

import http.server
import importlib.util
import os
import socket
import struct
import sys
import threading

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROGRAM = os.path.join(ROOT, "roles", "nginx_transparent_proxy", "files", "netops-healthcheck.py")


def load_program():
    """The program as a module (registered in sys.modules: its dataclasses need it)."""
    name = "netops_healthcheck"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PROGRAM)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


hc = load_program()


def check(**kw):
    """A Check as the configuration parser makes it, for a type and overrides."""
    raw = {"type": "dns", "interval": 1.0, "timeout": 0.5}
    raw.update(kw)
    return hc.parse_config({"services": [{"name": "s", "port": 53, "upstreams": ["127.0.0.1"], "check": raw}]}).services[0].check


# ---------------------------------------------------------------------------------------------------------
# a DNS responder written independently of the program's codec
# ---------------------------------------------------------------------------------------------------------

def dns_reply(query, rcode=0, mode="ok"):
    """A reply to query: same ID and question, QR=1 AA=1, rcode, one A record 192.0.2.1 when NOERROR.
    mode: ok, wrong-id, not-reply, short, other-name."""
    qid = struct.unpack("!H", query[:2])[0]
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12:end + 5]
    if mode == "short":
        return query[:7]
    if mode == "wrong-id":
        qid ^= 0x5A5A
    if mode == "other-name":
        question = b"\x05other\x07example\x00" + question[end + 1 - 12:]
    flags = (0x8000 if mode != "not-reply" else 0) | 0x0400 | (query[2] & 1) << 8 | rcode
    answers = b""
    if rcode == 0:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])
    return struct.pack("!HHHHHH", qid, flags, 1, 1 if answers else 0, 0, 0) + question + answers


class _Thread:
    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._close()
        self._thread.join(2)

    def _close(self):
        raise NotImplementedError

    def _serve(self):
        raise NotImplementedError


class UDPResponder(_Thread):
    """Answers each datagram with handler(data) (None: stays silent). Records (source, data)."""

    def __init__(self, address="127.0.0.1", port=0, handler=None):
        super().__init__()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.sock.settimeout(0.05)
        self.address = address
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.seen = []

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.seen.append((peer, data))
            reply = self.handler(data) if self.handler else None
            if reply is not None:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    pass

    def _close(self):
        self.sock.close()


def dns_udp(address="127.0.0.1", port=0, rcode=0, mode="ok"):
    return UDPResponder(address, port, lambda q: dns_reply(q, rcode, mode)).start()


class TCPResponder(_Thread):
    """Accepts connections; handler(conn) talks on each (None: accept and close)."""

    def __init__(self, address="127.0.0.1", port=0, handler=None):
        super().__init__()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.connections = 0

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(1)
                try:
                    if self.handler:
                        self.handler(conn)
                except OSError:
                    pass

    def _close(self):
        self.sock.close()


def dns_tcp_handler(rcode=0):
    def handler(conn):
        length = struct.unpack("!H", conn.recv(2))[0]
        query = b""
        while len(query) < length:
            query += conn.recv(length - len(query))
        reply = dns_reply(query, rcode)
        conn.sendall(struct.pack("!H", len(reply)) + reply)
    return handler


class HTTPServer:
    """A tiny HTTP server on a thread answering every GET with self.status; records the Host headers."""

    def __init__(self, address="127.0.0.1", status=200):
        outer = self
        self.status = status
        self.hosts = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # pylint: disable=invalid-name
                outer.hosts.append(self.headers.get("Host"))
                body = b"ok\n" if outer.status == 200 else b"unavailable\n"
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # pylint: disable=arguments-differ
                pass

        self.server = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def closed_port(address="127.0.0.1", kind=socket.SOCK_DGRAM):
    """A port nobody listens on (bound for an instant by the kernel's choice, then closed)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]
