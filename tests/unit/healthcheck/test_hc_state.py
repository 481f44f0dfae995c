"""The pure parts of the health checker driven by a fake clock: the up/down state machine (fall, rise,
hold-down), fail open, rendering, coalescing and rate limiting, applying with a fake runner."""

import asyncio
import json
import os
import socket

import pytest

from .hcutil import check, hc

HOLD = 3.0


class Clock:
    def __init__(self, start=1000.0):
        self.mono = start
        self.wall = 1796326800.0 + start  # 2026-12-03T19:40:00Z at mono 0

    def advance(self, seconds):
        self.mono += seconds
        self.wall += seconds


def upstream(addr="172.16.0.12", port=53, service="dns_udp", clock=None):
    return hc.UpstreamState(service=service, address=addr, port=port, since=clock.wall if clock else 0.0)


def probe(st, clock, ok, error="timeout after 0.5s", chk=None, hold=HOLD):
    chk = chk or check(fall=2, rise=2)
    clock.advance(1.0)
    return st.record(ok, "" if ok else error, 0.01, chk, hold, clock.mono, clock.wall)


def test_fall_consecutive_failures_mark_down():
    clock = Clock()
    st = upstream(clock=clock)
    assert probe(st, clock, False) is None and st.up and st.fail == 1
    assert probe(st, clock, True) is None and st.fail == 0  # a good probe resets the count
    assert probe(st, clock, False) is None
    tr = probe(st, clock, False)
    assert tr.kind == "down" and not st.up
    assert tr.message == "dns_udp 172.16.0.12:53 DOWN (timeout after 0.5s, 2/2 failed)"
    assert st.since == clock.wall and st.reason == "timeout after 0.5s" and st.transitions == 1
    assert probe(st, clock, False, error="connection refused") is None  # already down: no new transition
    assert st.reason == "timeout after 0.5s" and st.last_error == "connection refused"


def test_rise_after_the_hold_down():
    clock = Clock()
    st = upstream(clock=clock)
    probe(st, clock, False)
    probe(st, clock, False)
    down_at = clock.mono
    assert probe(st, clock, True) is None
    tr = probe(st, clock, True)  # 2 ok, 2 s after going down: still held down (3 s)
    assert tr is None and not st.up and st.ok == 2
    tr = probe(st, clock, True)  # 3 s after going down
    assert tr.kind == "up" and st.up and clock.mono - down_at >= HOLD
    assert tr.message.startswith("dns_udp 172.16.0.12:53 UP (3 ok in a row, down for 3.0s with a 3s hold-down")
    assert st.reason == "" and st.down_mono is None and st.transitions == 2


def test_rise_message_without_hold_down_wait():
    clock = Clock()
    st = upstream(clock=clock)
    chk = check(fall=1, rise=3)
    assert probe(st, clock, False, chk=chk).kind == "down"  # fall 1
    assert probe(st, clock, True, chk=chk, hold=0.5) is None
    assert probe(st, clock, True, chk=chk, hold=0.5) is None
    assert probe(st, clock, True, chk=chk, hold=0.5).message == "dns_udp 172.16.0.12:53 UP (3/3 ok)"


def test_a_failure_during_rise_starts_the_count_again():
    clock = Clock()
    st = upstream(clock=clock)
    chk = check(fall=1, rise=2)
    probe(st, clock, False, chk=chk, hold=0)
    probe(st, clock, True, chk=chk, hold=0)
    probe(st, clock, False, chk=chk, hold=0)
    assert probe(st, clock, True, chk=chk, hold=0) is None and not st.up
    assert probe(st, clock, True, chk=chk, hold=0).kind == "up"


def test_error_text_is_one_line_and_bounded():
    clock = Clock()
    st = upstream(clock=clock)
    chk = check(fall=1)
    probe(st, clock, False, error="line one\nline two\x00" + "x" * 1000, chk=chk)
    assert "\n" not in st.reason and len(st.reason) <= hc.REASON_MAX and st.reason.startswith("line one | line two")
    assert len(st.last_error) <= hc.ERROR_MAX


def service(kind="dns", n=3, params=""):
    ups = ["172.16.0.%d" % (11 + i) for i in range(n)]
    return hc.parse_config({"services": [{"name": "dns_udp", "port": 53, "upstreams": ups, "server_params": params,
                                          "check": {"type": kind}}]}).services[0]


def states_for(svc, clock, down=()):
    states = {}
    for addr in svc.upstreams:
        st = upstream(addr, svc.port, svc.name, clock)
        if addr in down:
            st.up = False
            st.reason = "timeout after 0.5s"
        states[svc.endpoint(addr)] = st
    return states


def test_render_marks_down_servers():
    clock = Clock(0.0)
    svc = service(params="weight=2")
    states = states_for(svc, clock, down=["172.16.0.12"])
    clock.advance(1)
    assert hc.render_service(svc, states) == (
        "# managed by netops-healthcheck: membership of service dns_udp (do not edit)\n"
        "server 172.16.0.11:53 weight=2;\n"
        "server 172.16.0.12:53 weight=2 down;   # down since 2026-12-03T19:40:00Z: timeout after 0.5s\n"
        "server 172.16.0.13:53 weight=2;\n")
    # the same membership renders the same bytes, whatever the counters and the time
    states["172.16.0.12:53"].fail = 17
    states["172.16.0.12:53"].last_error = "connection refused"
    assert hc.render_service(svc, states) == hc.render_service(svc, states)
    assert "connection refused" not in hc.render_service(svc, states)


def test_render_keeps_each_upstreams_weight_and_backup_and_marks_it_down():
    clock = Clock(0.0)
    svc = hc.parse_config({"services": [{"name": "dns_udp", "port": 53, "check": {"type": "dns"},
                                         "upstreams": [{"address": "172.16.0.11", "params": "weight=5"}, "172.16.0.12",
                                                       {"address": "172.16.0.13", "params": "backup"}]}]}).services[0]
    states = states_for(svc, clock, down=["172.16.0.11", "172.16.0.13"])
    assert hc.render_service(svc, states) == (
        "# managed by netops-healthcheck: membership of service dns_udp (do not edit)\n"
        "server 172.16.0.11:53 weight=5 down;   # down since 2026-12-03T19:40:00Z: timeout after 0.5s\n"
        "server 172.16.0.12:53;\n"
        "server 172.16.0.13:53 backup down;   # down since 2026-12-03T19:40:00Z: timeout after 0.5s\n")
    # fail open keeps the parameters too
    states["172.16.0.12:53"].up = False
    text = hc.render_service(svc, states)
    assert "server 172.16.0.11:53 weight=5;\n" in text and "server 172.16.0.13:53 backup;\n" in text and " down;" not in text


def test_fail_open_renders_every_server_up():
    clock = Clock()
    svc = service()
    states = states_for(svc, clock, down=svc.upstreams)
    assert hc.is_fail_open(svc, states)
    text = hc.render_service(svc, states)
    assert "# FAIL OPEN" in text and " down;" not in text
    assert text.count("\nserver ") == 3
    states["172.16.0.13:53"].up = True
    assert not hc.is_fail_open(svc, states)
    assert hc.render_service(svc, states).count(" down;") == 2


def test_type_none_is_always_up():
    clock = Clock()
    svc = service("none")
    states = states_for(svc, clock, down=svc.upstreams[:1])
    assert not hc.is_fail_open(svc, states)
    assert " down" not in hc.render_service(svc, states)


def test_ipv6_upstreams_are_bracketed():
    svc = hc.parse_config({"services": [{"name": "d", "port": 53, "upstreams": ["fd00:16::13", "172.16.0.11"],
                                         "check": {"type": "tcp"}}]}).services[0]
    assert "server [fd00:16::13]:53;\nserver 172.16.0.11:53;\n" in hc.render_service(svc, {})


def test_initial_states_from_the_state_file():
    clock = Clock()
    cfg = hc.parse_config({"services": [
        {"name": "a", "port": 53, "upstreams": ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "check": {"type": "dns"}},
        {"name": "b", "port": 80, "upstreams": ["10.0.0.1"], "check": {"type": "none"}}]})
    went_down = clock.wall - 1.0
    saved = {"a": {"upstreams": {"10.0.0.2:53": {"state": "down", "since_epoch": went_down, "reason": "connection refused",
                                                 "transitions": 5},
                                 "10.0.0.3:53": {"state": "up", "since_epoch": 5.0},
                                 "10.0.0.9:53": {"state": "down"}}},
             "b": {"upstreams": {"10.0.0.1:80": {"state": "down"}}}}
    states = hc.initial_states(cfg, saved, clock.mono, clock.wall)
    assert set(states["a"]) == {"10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"}
    down = states["a"]["10.0.0.2:53"]
    assert not down.up and down.reason == "connection refused" and down.since == went_down and down.transitions == 5
    assert states["a"]["10.0.0.1:53"].up and states["a"]["10.0.0.3:53"].since == 5.0
    assert states["b"]["10.0.0.1:80"].up  # type none
    # it stays down until rise successes, and the hold-down counts from its since: 1 s already passed
    chk = cfg.services[0].check
    clock.advance(1.0)
    assert down.record(True, "", 0.01, chk, HOLD, clock.mono, clock.wall) is None
    clock.advance(1.0)
    assert down.record(True, "", 0.01, chk, HOLD, clock.mono, clock.wall).kind == "up"


@pytest.mark.parametrize("saved", [None, [], {"a": []}, {"a": {"upstreams": []}}, {"a": {"upstreams": {"10.0.0.1:53": "down"}}},
                                   {"a": {"upstreams": {"10.0.0.1:53": {"state": "down", "since_epoch": "x", "reason": 5}}}}])
def test_initial_states_survive_odd_state_files(saved):
    cfg = hc.parse_config({"services": [{"name": "a", "port": 53, "upstreams": ["10.0.0.1"], "check": {"type": "dns"}}]})
    st = hc.initial_states(cfg, saved, 10.0, 1000.0)["a"]["10.0.0.1:53"]
    assert st.reason in ("", "down in the state file")


# ---------------------------------------------------------------------------------------------------------
# coalescing and rate limiting
# ---------------------------------------------------------------------------------------------------------

def test_changes_within_the_window_make_one_apply():
    sched = hc.ApplyScheduler(coalesce=0.3, min_interval=1.0)
    assert sched.due_at() is None and not sched.is_due(100.0)
    sched.note_change(100.0)
    sched.note_change(100.1)
    sched.note_change(100.25)
    assert sched.due_at() == pytest.approx(100.3)  # counted from the first change: flapping cannot postpone it
    assert not sched.is_due(100.29) and sched.is_due(100.3)
    sched.begin()
    assert sched.due_at() is None
    sched.finished(100.3, ran_commands=True)


def test_lockout_after_a_reload_then_coalesced():
    sched = hc.ApplyScheduler(coalesce=0.3, min_interval=1.0)
    sched.note_change(100.0)
    sched.begin()
    sched.finished(100.3, ran_commands=True)
    sched.note_change(100.4)  # during the lock-out (until 101.3)
    sched.note_change(100.9)
    assert sched.due_at() == pytest.approx(101.3)
    sched.begin()
    sched.finished(101.3, ran_commands=True)
    sched.note_change(102.2)  # lock-out ends at 102.3, the window at 102.5
    assert sched.due_at() == pytest.approx(102.5)


def test_a_change_during_an_apply_stays_pending():
    sched = hc.ApplyScheduler(coalesce=0.3, min_interval=1.0)
    sched.note_change(10.0)
    sched.begin()
    sched.note_change(10.35)  # while nginx -t runs
    sched.finished(10.3, ran_commands=True)
    assert sched.due_at() == pytest.approx(11.3)


def test_a_no_op_apply_does_not_lock_out():
    sched = hc.ApplyScheduler(coalesce=0.3, min_interval=1.0)
    sched.note_change(10.0)
    sched.begin()
    sched.finished(10.3, ran_commands=False)
    sched.note_change(10.5)
    assert sched.due_at() == pytest.approx(10.8)


def test_retry_after_a_failure():
    sched = hc.ApplyScheduler(coalesce=0.3, min_interval=1.0)
    sched.note_change(10.0)
    sched.begin()
    sched.finished(10.3, ran_commands=True)
    sched.retry(40.3)
    assert sched.due_at() == pytest.approx(40.3)
    sched.note_change(12.0)  # the next change comes first
    assert sched.due_at() == pytest.approx(12.3)


def simulate(changes, coalesce=0.3, min_interval=1.0, step=0.01, until=None):
    """Drive the scheduler like the daemon's applier on a fake clock; return the apply times."""
    sched = hc.ApplyScheduler(coalesce, min_interval)
    changes = sorted(changes)
    applies = []
    t = 0.0
    until = until or (changes[-1] + coalesce + min_interval + 1)
    while t <= until:
        while changes and changes[0] <= t + 1e-9:
            sched.note_change(changes.pop(0))
        if sched.is_due(t + 1e-9):
            sched.begin()
            applies.append(round(t, 2))
            sched.finished(t, ran_commands=True)
        t = round(t + step, 2)
    return applies


def test_simulated_storm_is_rate_limited():
    # a change every 0.1 s for 3 s: one apply per second at most, the first 0.3 s after the first change
    applies = simulate([round(0.1 * i, 1) for i in range(31)])
    assert applies[0] == pytest.approx(0.3)
    assert all(b - a >= 1.0 - 1e-6 for a, b in zip(applies, applies[1:]))
    assert len(applies) == 4  # 0.3, 1.3, 2.3, 3.3: the last change (3.0) is applied too


def test_simulated_isolated_changes():
    assert simulate([1.0, 5.0]) == [1.3, 5.3]


# ---------------------------------------------------------------------------------------------------------
# applying with a fake runner
# ---------------------------------------------------------------------------------------------------------

class FakeRunner:
    def __init__(self, test_rc=0, reload_rc=0, seen=None):
        self.test_rc = test_rc
        self.reload_rc = reload_rc
        self.calls = []
        self.seen = seen  # path whose content is recorded at each call

    async def __call__(self, argv):
        self.calls.append((argv[-1], self.seen.read_text() if self.seen and self.seen.exists() else None))
        if argv[-1] == "test":
            return self.test_rc, "", "" if self.test_rc == 0 else "nginx: [emerg] invalid parameter \"dwn\"\nnginx: configuration file test failed"
        return self.reload_rc, "", "" if self.reload_rc == 0 else "Job for nginx.service failed."


def apply_cfg(tmp_path):
    return hc.parse_config({"include_dir": str(tmp_path / "inc"), "state_file": str(tmp_path / "state.json"),
                            "nginx_test": ["fake", "test"], "nginx_reload": ["fake", "reload"],
                            "services": [{"name": "a", "port": 53, "upstreams": ["10.0.0.1"], "check": {"type": "dns"}},
                                         {"name": "b", "port": 53, "upstreams": ["10.0.0.2"], "check": {"type": "dns"}}]})


def run(coro):
    return asyncio.run(coro)


def test_apply_writes_only_changed_files_tests_then_reloads(tmp_path):
    cfg = apply_cfg(tmp_path)
    os.makedirs(tmp_path / "inc")
    (tmp_path / "inc" / "a.conf").write_text("A\n")
    (tmp_path / "inc" / "b.conf").write_text("B\n")
    runner = FakeRunner(seen=tmp_path / "inc" / "a.conf")
    rendered = {str(tmp_path / "inc" / "a.conf"): "A2\n", str(tmp_path / "inc" / "b.conf"): "B\n"}
    result = run(hc.apply_files(cfg, rendered, runner))
    assert result.changed == [str(tmp_path / "inc" / "a.conf")] and result.test_ok and result.reload_ok and result.ran
    assert runner.calls == [("test", "A2\n"), ("reload", "A2\n")]  # nginx -t sees the new file
    assert (tmp_path / "inc" / "a.conf").read_text() == "A2\n"
    # nothing changed: nothing runs
    runner.calls.clear()
    result = run(hc.apply_files(cfg, rendered, runner))
    assert result.changed == [] and not result.ran and runner.calls == []


def test_failed_nginx_test_puts_the_previous_files_back(tmp_path):
    cfg = apply_cfg(tmp_path)
    os.makedirs(tmp_path / "inc")
    (tmp_path / "inc" / "a.conf").write_text("A\n")
    runner = FakeRunner(test_rc=1, seen=tmp_path / "inc" / "a.conf")
    rendered = {str(tmp_path / "inc" / "a.conf"): "A2\n", str(tmp_path / "inc" / "b.conf"): "B\n"}
    result = run(hc.apply_files(cfg, rendered, runner))
    assert runner.calls == [("test", "A2\n")]  # no reload
    assert result.test_ok is False and result.reload_ok is None
    assert "`fake test` exited 1: nginx: [emerg] invalid parameter \"dwn\" | nginx: configuration file test failed" == result.error
    assert (tmp_path / "inc" / "a.conf").read_text() == "A\n"  # put back
    assert not (tmp_path / "inc" / "b.conf").exists()  # did not exist before: removed
    assert sorted(os.listdir(tmp_path / "inc")) == ["a.conf"]


def test_failed_reload_keeps_the_tested_files_and_is_retried(tmp_path):
    cfg = apply_cfg(tmp_path)
    runner = FakeRunner(reload_rc=1)
    rendered = {str(tmp_path / "inc" / "a.conf"): "A\n"}
    result = run(hc.apply_files(cfg, rendered, runner))
    assert result.test_ok and result.reload_ok is False and "Job for nginx.service failed" in result.error
    assert (tmp_path / "inc" / "a.conf").read_text() == "A\n"
    runner.reload_rc = 0
    runner.calls.clear()
    result = run(hc.apply_files(cfg, rendered, runner, reload_pending=True))  # no file changes, but a reload is owed
    assert result.changed == [] and result.reload_ok and [c[0] for c in runner.calls] == ["test", "reload"]


def test_cancelled_during_nginx_test_puts_the_files_back(tmp_path):
    cfg = apply_cfg(tmp_path)
    os.makedirs(tmp_path / "inc")
    (tmp_path / "inc" / "a.conf").write_text("A\n")

    async def slow(argv):
        await asyncio.sleep(10)

    async def scenario():
        task = asyncio.create_task(hc.apply_files(cfg, {str(tmp_path / "inc" / "a.conf"): "A2\n"}, slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert (tmp_path / "inc" / "a.conf").read_text() == "A\n"


def test_run_command_sets_lc_all_and_reports_missing_commands():
    rc, out, err = run(hc.run_command(["/bin/sh", "-c", "echo $LC_ALL; echo oops >&2; exit 3"]))
    assert (rc, out, err) == (3, "C\n", "oops\n")
    rc, out, err = run(hc.run_command(["/nonexistent/nginx", "-t"]))
    assert rc == 127 and "cannot run /nonexistent/nginx" in err
    rc, out, err = run(hc.run_command(["/bin/sleep", "5"], timeout=0.2))
    assert rc == -1 and "timed out after 0.2s" in err


def test_daemon_apply_once_logs_one_line_and_counts(tmp_path):
    cfg = apply_cfg(tmp_path)
    lines = []
    runner = FakeRunner()
    clock = Clock()
    daemon = hc.Daemon(cfg, log=lambda prio, msg: lines.append((prio, msg)), runner=runner, mono=lambda: clock.mono, wall=lambda: clock.wall)
    daemon.load_initial_state()
    run(daemon.apply_once())
    assert lines == [("notice", lines[0][1])] and lines[0][1].startswith("reload: 2 services changed (a, b), nginx -t ok (")
    assert daemon.reload_count == 1 and daemon.last_reload == clock.wall
    lines.clear()
    run(daemon.apply_once())  # nothing changed: silent, no commands
    assert lines == [] and len(runner.calls) == 2
    runner.test_rc = 1
    st = daemon.states["a"]["10.0.0.1:53"]
    st.up = False
    st.reason = "timeout after 0.5s"
    run(daemon.apply_once())
    assert lines[0][0] == "err" and "nginx -t FAILED, the previous files are back in place" in lines[0][1]
    assert "invalid parameter" in lines[0][1] and daemon.reload_failures == 1 and daemon.last_reload_error
    assert daemon.sched.retry_at == pytest.approx(clock.mono + hc.RETRY_AFTER)
    assert " down" not in (tmp_path / "inc" / "a.conf").read_text()


def test_state_document_and_prometheus_text(tmp_path):
    cfg = hc.parse_config({"include_dir": str(tmp_path / "inc"), "state_file": str(tmp_path / "s" / "state.json"),
                           "textfile": str(tmp_path / "prom" / "hc.prom"),
                           "services": [{"name": "a", "port": 53, "upstreams": ["10.0.0.1", "fd00::2"], "check": {"type": "dns", "fall": 1}}]})
    clock = Clock()
    lines = []
    daemon = hc.Daemon(cfg, log=lambda prio, msg: lines.append((prio, msg)), mono=lambda: clock.mono, wall=lambda: clock.wall)
    daemon.load_initial_state()
    svc = cfg.services[0]
    daemon.on_result(svc, daemon.states["a"]["10.0.0.1:53"], False, "timeout after 0.5s", 0.5)
    assert ("warning", "a 10.0.0.1:53 DOWN (timeout after 0.5s, 1/1 failed)") in lines
    daemon.on_result(svc, daemon.states["a"]["[fd00::2]:53"], False, "connection refused", 0.001)
    assert [m for p, m in lines if p == "crit"][0].startswith("a FAIL OPEN: all 2 upstreams fail their health checks")
    daemon.write_state()
    doc = json.loads((tmp_path / "s" / "state.json").read_text())
    assert doc["pid"] == os.getpid() and doc["config"] == "" and doc["reload_count"] == 0
    assert doc["services"]["a"]["fail_open"] is True and doc["services"]["a"]["fail_open_since_epoch"] == round(clock.wall, 3)
    up = doc["services"]["a"]["upstreams"]["10.0.0.1:53"]
    assert up["state"] == "down" and up["reason"] == "timeout after 0.5s" and up["fail"] == 1 and up["latency"] == 0.5
    assert up["since"].endswith("Z") and up["since_epoch"] == round(clock.wall, 3)
    prom = (tmp_path / "prom" / "hc.prom").read_text()
    assert 'netops_healthcheck_upstream_up{service="a",upstream="10.0.0.1:53"} 0\n' in prom
    assert 'netops_healthcheck_transitions_total{service="a",upstream="[fd00::2]:53"} 1\n' in prom
    assert 'netops_healthcheck_probe_duration_seconds{service="a",upstream="10.0.0.1:53"} 0.500000\n' in prom
    assert 'netops_healthcheck_fail_open{service="a"} 1\n' in prom
    assert "netops_healthcheck_reloads_total 0\n" in prom
    assert all(line.startswith("#") or line.startswith("netops_healthcheck_") for line in prom.splitlines())
    # one back: fail open ends, and is logged once
    clock.advance(HOLD + 1)
    lines.clear()
    daemon.on_result(svc, daemon.states["a"]["10.0.0.1:53"], True, "", 0.01)
    daemon.on_result(svc, daemon.states["a"]["10.0.0.1:53"], True, "", 0.01)
    assert [p for p, m in lines] == ["notice", "notice"] and "fail open ended" in lines[1][1]


def test_log_lines_carry_journal_priorities_under_systemd(tmp_path, monkeypatch):
    path = tmp_path / "journal"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", "%d:%d" % (st.st_dev, st.st_ino))
        log = hc.Log(stream)
        log("warning", "dns_udp 172.16.0.12:53 DOWN (timeout after 0.5s, 2/2 failed)")
        log("crit", "two\nlines")
    assert path.read_text() == "<4>dns_udp 172.16.0.12:53 DOWN (timeout after 0.5s, 2/2 failed)\n<2>two | lines\n"
    monkeypatch.delenv("JOURNAL_STREAM")
    with open(path, "w") as stream:
        hc.Log(stream)("notice", "started")
    line = path.read_text()
    assert line.endswith("Z NOTICE started\n") and line[:4].isdigit()


def test_sd_notify(tmp_path, monkeypatch):
    addr = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(addr)
        monkeypatch.setenv("NOTIFY_SOCKET", addr)
        hc.sd_notify("READY=1")
        assert sock.recv(100) == b"READY=1"
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    hc.sd_notify("READY=1")  # no listener: ignored
