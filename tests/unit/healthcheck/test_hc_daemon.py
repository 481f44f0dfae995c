"""The health checker's daemon end to end: the real program in a subprocess, DNS responders on loopback
addresses, fake nginx_test/nginx_reload commands that record their calls, a temporary directory."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from .hcutil import PROGRAM, dns_udp

ADDRS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
TIMING = {"interval": 0.2, "timeout": 0.15, "fall": 2, "rise": 2}
HOLD_DOWN = 1.0
COALESCE = 0.3

FAKE_NGINX = """#!/bin/sh
# fake nginx -t / systemctl reload nginx: records the call, the locale and the include files' down lines
echo "$1 LC_ALL=$LC_ALL down=$(cat "$2"/*.conf 2>/dev/null | grep -c ' down;')" >> "$2/../calls.log"
if [ "$1" = test ] && [ -e "$2/../fail-test" ]; then
    echo "nginx: [emerg] invalid number of arguments in \\"server\\" directive" >&2
    echo "nginx: configuration file /etc/nginx/nginx.conf test failed" >&2
    exit 1
fi
exit 0
"""


def responders_on_one_port(addresses):
    """A DNS responder on each address, all on the same port (the service's upstream port)."""
    for _attempt in range(20):
        first = dns_udp(addresses[0])
        started = [first]
        try:
            for addr in addresses[1:]:
                started.append(dns_udp(addr, first.port))
            return first.port, dict(zip(addresses, started))
        except OSError:
            for r in started:
                r.stop()
    raise RuntimeError("no free port on every loopback address")


class Run:
    """The daemon as a subprocess; its stdout lines collected by a thread."""

    def __init__(self, tmp_path, upstreams, port, extra_services=()):
        self.dir = tmp_path
        self.inc = tmp_path / "inc"
        self.inc.mkdir(exist_ok=True)
        self.script = tmp_path / "fake-nginx.sh"
        self.script.write_text(FAKE_NGINX)
        self.port = port
        self.config = tmp_path / "healthcheck.json"
        self.write_config(upstreams, extra_services)
        self.lines = []
        self.proc = None

    def write_config(self, upstreams, extra_services=()):
        cfg = {
            "include_dir": str(self.inc),
            "state_file": str(self.dir / "state" / "state.json"),
            "textfile": str(self.dir / "prom" / "netops_healthcheck.prom"),
            "nginx_test": ["/bin/sh", str(self.script), "test", str(self.inc)],
            "nginx_reload": ["/bin/sh", str(self.script), "reload", str(self.inc)],
            "coalesce": COALESCE,
            "min_reload_interval": 0.5,
            "hold_down": HOLD_DOWN,
            "services": [{"name": "dns_udp", "port": self.port, "upstreams": upstreams, "server_params": "",
                          "check": dict(TIMING, type="dns", dns_name="www.example.com", dns_type="A", dns_rcodes=["NOERROR"])}]
            + list(extra_services),
        }
        self.config.write_text(json.dumps(cfg, indent=1))

    def command(self, *args):
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
        return subprocess.run([sys.executable, PROGRAM] + list(args) + ["--config", str(self.config)],
                              capture_output=True, text=True, env=env, timeout=20, check=False)

    def start(self):
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")}
        env["LC_ALL"] = "en_US.UTF-8"  # the daemon must hand LC_ALL=C to nginx's commands anyway
        self.proc = subprocess.Popen([sys.executable, PROGRAM, "run", "--config", str(self.config)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda: self.logged("started: pid"), 5, "the daemon to start")
        return self

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def logged(self, text):
        return [line for line in self.lines if text in line]

    def calls(self):
        path = self.dir / "calls.log"
        return path.read_text().splitlines() if path.exists() else []

    def include(self, name="dns_udp"):
        path = self.inc / (name + ".conf")
        return path.read_text() if path.exists() else ""

    def state(self):
        try:
            return json.loads((self.dir / "state" / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def wait_for(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return time.monotonic()
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError("timed out waiting for %s; daemon output:\n%s\ncalls: %s" % (what, "\n".join(self.lines), self.calls()))

    def send(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM):
        start = time.monotonic()
        self.proc.send_signal(sig)
        rc = self.proc.wait(5)
        return rc, time.monotonic() - start

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def lab(tmp_path):
    port, responders = responders_on_one_port(ADDRS)
    runs = []
    state = {"port": port, "responders": responders, "runs": runs, "tmp": tmp_path}
    yield state
    for run in runs:
        run.kill()
    for r in state["responders"].values():
        r.stop()


def down_line(addr, port):
    return "server %s:%d down;" % (addr, port)


def test_down_up_and_fail_open_end_to_end(lab):
    port, responders = lab["port"], lab["responders"]
    run = Run(lab["tmp"], ADDRS, port, extra_services=[
        {"name": "syslog", "port": 514, "upstreams": ["127.0.0.1"], "check": {"type": "none"}}])
    lab["runs"].append(run)

    # the role renders before it reloads nginx: then the daemon finds nothing to change at start
    rendered = run.command("render")
    assert rendered.returncode == 0 and json.loads(rendered.stdout) == {
        "changed": True, "files": [str(run.inc / "dns_udp.conf"), str(run.inc / "syslog.conf")]}
    run.start()
    time.sleep(COALESCE + 0.5)
    assert run.calls() == [] and run.include().count("\nserver ") == 3 and " down" not in run.include()
    assert run.state()["services"]["dns_udp"]["upstreams"]["127.0.0.2:%d" % port]["state"] == "up"

    # an upstream dies: marked down after fall probes, one nginx -t and one reload after the coalesce window
    t_kill = time.monotonic()
    responders["127.0.0.2"].stop()
    t_down = run.wait_for(lambda: down_line("127.0.0.2", port) in run.include(), 3, "127.0.0.2 down in the include")
    assert t_down - t_kill < 2.0  # about 0.7 s: 2 probes 0.2 s apart + 0.3 s coalesce
    run.wait_for(lambda: len(run.calls()) >= 2, 2, "nginx -t and the reload")
    time.sleep(0.5)
    assert run.calls() == ["test LC_ALL=C down=1", "reload LC_ALL=C down=1"]
    assert run.logged("dns_udp 127.0.0.2:%d DOWN (connection refused, 2/2 failed)" % port)
    assert run.logged("reload: 1 service changed (dns_udp), nginx -t ok (")
    assert "# down since " in run.include() and ": connection refused\n" in run.include()
    assert run.include("syslog") == "# managed by netops-healthcheck: membership of service syslog (do not edit)\nserver 127.0.0.1:514;\n"
    run.wait_for(lambda: run.state().get("reload_count") == 1, 2, "the state file to count the reload")
    state = run.state()
    up2 = state["services"]["dns_udp"]["upstreams"]["127.0.0.2:%d" % port]
    assert up2["state"] == "down" and up2["reason"] == "connection refused" and up2["since"].endswith("Z")
    assert state["pid"] == run.proc.pid and state["config"] == str(run.config) and state["last_reload_error"] == ""
    prom = (run.dir / "prom" / "netops_healthcheck.prom").read_text()
    assert 'netops_healthcheck_upstream_up{service="dns_udp",upstream="127.0.0.2:%d"} 0' % port in prom

    # it comes back: up again after rise good probes, but not before the hold-down
    responders["127.0.0.2"] = dns_udp("127.0.0.2", port)
    t_up = run.wait_for(lambda: down_line("127.0.0.2", port) not in run.include(), 4, "127.0.0.2 up again")
    assert t_up - t_down >= HOLD_DOWN - 0.1
    run.wait_for(lambda: len(run.calls()) >= 4, 2, "the second reload")
    assert run.calls()[2:] == ["test LC_ALL=C down=0", "reload LC_ALL=C down=0"]
    assert run.logged("dns_udp 127.0.0.2:%d UP (" % port)

    # every upstream dies: fail open, every server stays in the include, logged loudly once
    for addr in ADDRS:
        responders[addr].stop()
    run.wait_for(lambda: run.logged("dns_udp FAIL OPEN"), 3, "fail open")
    run.wait_for(lambda: run.state().get("services", {}).get("dns_udp", {}).get("fail_open") is True, 2, "fail_open in the state file")
    time.sleep(COALESCE + 0.6)
    text = run.include()
    assert "# FAIL OPEN" in text and " down;" not in text and text.count("\nserver ") == 3
    assert len(run.logged("FAIL OPEN")) == 1
    assert len(run.logged("DOWN (")) == 4

    rc, elapsed = run.stop(signal.SIGTERM)
    assert rc == 0 and elapsed < 1.0
    assert run.logged("stopped (SIGTERM)")
    assert run.state()["services"]["dns_udp"]["fail_open"] is True


def test_failed_nginx_test_then_sighup(lab):
    port, responders = lab["port"], lab["responders"]
    run = Run(lab["tmp"], ADDRS[:2], port)
    lab["runs"].append(run)
    run.start()
    # no render before: the first apply writes the files, tests and reloads
    run.wait_for(lambda: len(run.calls()) >= 2, 3, "the first apply")
    assert run.calls() == ["test LC_ALL=C down=0", "reload LC_ALL=C down=0"]

    # nginx -t fails: the previous files are put back, no reload, the error is logged and kept in the state
    (run.dir / "fail-test").write_text("")
    responders["127.0.0.2"].stop()
    run.wait_for(lambda: len(run.calls()) >= 3, 3, "the failing nginx -t")
    run.wait_for(lambda: run.logged("nginx -t FAILED"), 2, "the error in the journal")
    line = run.logged("nginx -t FAILED")[0]
    assert "the previous files are back in place" in line and "invalid number of arguments" in line and "test failed" in line
    assert run.calls()[2] == "test LC_ALL=C down=1"  # nginx -t saw the new file
    assert " down" not in run.include()  # and it was put back
    run.wait_for(lambda: run.state().get("last_reload_error"), 6, "the error in the state file")
    assert run.state()["reload_count"] == 1

    # SIGHUP with a third upstream: the states of the two that remain are kept (127.0.0.2 is still down)
    (run.dir / "fail-test").unlink()
    run.write_config(ADDRS)
    run.send(signal.SIGHUP)
    run.wait_for(lambda: run.logged("configuration re-read"), 3, "the configuration re-read")
    assert run.logged("upstreams: 2 kept with their state, 1 new, 0 gone")
    run.wait_for(lambda: "127.0.0.3:%d;" % port in run.include(), 3, "the new upstream in the include")
    assert down_line("127.0.0.2", port) in run.include()
    run.wait_for(lambda: len(run.calls()) >= 5, 2, "the reload after SIGHUP")
    assert run.calls()[3:] == ["test LC_ALL=C down=1", "reload LC_ALL=C down=1"]

    # an invalid configuration on SIGHUP is refused, the daemon goes on
    run.config.write_text("{\"services\": 3}")
    run.send(signal.SIGHUP)
    run.wait_for(lambda: run.logged("not applied, the previous one stays: services must be a list"), 3, "the refusal")
    assert run.proc.poll() is None
    rc, elapsed = run.stop(signal.SIGINT)
    assert rc == 0 and elapsed < 1.0 and run.logged("stopped (SIGINT)")
