"""Configuration validation of the health checker and its one-shot commands (check-config, render)."""

import copy
import json
import os
import stat

import pytest

from .hcutil import hc


def base(tmp_path=None):
    root = str(tmp_path) if tmp_path else "/tmp/x"
    return {
        "include_dir": root + "/upstreams",
        "state_file": root + "/state/state.json",
        "textfile": "",
        "nginx_test": ["nginx", "-t", "-q"],
        "nginx_reload": ["systemctl", "reload", "nginx"],
        "coalesce": 0.3,
        "min_reload_interval": 1.0,
        "hold_down": 3.0,
        "services": [
            {"name": "dns_udp", "port": 53, "upstreams": ["172.16.0.11", "172.16.0.12", "fd00:16:0::13"], "server_params": "",
             "check": {"type": "dns", "interval": 1.0, "timeout": 0.5, "fall": 2, "rise": 2, "source": "",
                       "dns_name": "www.example.com", "dns_type": "A", "dns_rcodes": ["NOERROR"]}},
            {"name": "web", "port": 80, "upstreams": ["172.16.0.11", "172.16.0.12"], "server_params": "weight=2 max_fails=0",
             "check": {"type": "http", "http_path": "/health", "http_status": [200, 204]}},
            {"name": "syslog", "port": 514, "upstreams": ["172.16.0.11"], "check": {"type": "none"}},
        ],
    }


def test_valid_config_and_defaults():
    cfg = hc.parse_config(base())
    dns, web, syslog = cfg.services
    assert dns.upstreams == ("172.16.0.11", "172.16.0.12", "fd00:16::13")  # normalised
    assert dns.endpoints == ["172.16.0.11:53", "172.16.0.12:53", "[fd00:16::13]:53"]
    assert dns.check.dns_type == 1 and dns.check.dns_rcodes == (0,) and dns.check.dns_proto == "udp"
    assert web.check.interval == 1.0 and web.check.timeout == 0.5 and web.check.fall == 2 and web.check.rise == 2
    assert web.check.http_status == (200, 204) and web.server_params == "weight=2 max_fails=0"
    assert syslog.check.type == "none"
    assert cfg.include_path(dns) == "/tmp/x/upstreams/dns_udp.conf"


def test_everything_but_services_has_a_default():
    cfg = hc.parse_config({"services": [{"name": "a", "port": 1, "upstreams": ["10.0.0.1"], "check": {"type": "tcp"}}]})
    assert cfg.include_dir == "/etc/nginx/netops-transparent-proxy/upstreams"
    assert cfg.state_file == "/var/lib/netops-healthcheck/state.json"
    assert cfg.nginx_test == ("nginx", "-t", "-q") and cfg.nginx_reload == ("systemctl", "reload", "nginx")
    assert (cfg.coalesce, cfg.min_reload_interval, cfg.hold_down) == (0.3, 1.0, 3.0)


def mutate(path, value, delete=False):
    cfg = base()
    obj = cfg
    for key in path[:-1]:
        obj = obj[key]
    if delete:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return cfg


BAD = [
    (["services", 0, "name"], "dns-udp", "services[0].name must match"),
    (["services", 1, "name"], "dns_udp", "service dns_udp: the name is used by more than one service"),
    (["services", 0, "port"], 0, "service dns_udp: port must be between 1 and 65535"),
    (["services", 0, "port"], "53", "service dns_udp: port must be an integer"),
    (["services", 0, "upstreams"], [], "service dns_udp: upstreams must be a non-empty list"),
    (["services", 0, "upstreams"], ["172.16.0.300"], "service dns_udp: upstreams[0]: \"172.16.0.300\" is not an IPv4 or IPv6 address"),
    (["services", 0, "upstreams"], ["upstream1"], "is not an IPv4 or IPv6 address"),
    (["services", 0, "upstreams"], ["fe80::1%eth0"], "zone"),
    (["services", 0, "upstreams"], ["10.0.0.1", "10.0.0.01"], "not an IPv4"),
    (["services", 0, "upstreams"], ["fd00::1", "fd00:0::1"], "upstreams[1] fd00::1 is listed twice"),
    (["services", 0, "server_params"], "weight=2; down", "server_params must not contain"),
    (["services", 0, "server_params"], "backup down", "must not contain `down`"),
    (["services", 1, "upstreams"], [{"address": "172.16.0.11", "params": "weight=2 down"}], "service web: upstreams[0].params must not contain `down`"),
    (["services", 1, "upstreams"], [{"address": "172.16.0.11", "params": "weight=2;"}], "service web: upstreams[0].params must not contain ;"),
    (["services", 1, "upstreams"], [{"address": "172.16.0.11", "params": 2}], "service web: upstreams[0].params must be a string"),
    (["services", 1, "upstreams"], [{"address": "172.16.0.11", "weight": 2}], "service web: upstreams[0]: unknown key weight"),
    (["services", 1, "upstreams"], [{"params": "backup"}], "service web: upstreams[0].address is required"),
    (["services", 1, "upstreams"], ["172.16.0.11", {"address": "172.16.0.11"}], "upstreams[1] 172.16.0.11 is listed twice"),
    (["services", 1, "upstreams"], [["172.16.0.11"]], "service web: upstreams[0] must be an address or an object"),
    (["services", 0, "check", "type"], "icmp", "service dns_udp: check.type must be one of dns, udp, tcp, http, none"),
    (["services", 0, "check", "timeout"], 1.0, "service dns_udp: check.timeout (1) must be less than service dns_udp: check.interval (1)"),
    (["services", 0, "check", "timeout"], 0, "check.timeout must be > 0"),
    (["services", 0, "check", "interval"], "1s", "check.interval must be a number"),
    (["services", 0, "check", "interval"], True, "check.interval must be a number"),
    (["services", 0, "check", "fall"], 0, "service dns_udp: check.fall must be between 1 and 1000"),
    (["services", 0, "check", "rise"], 1.5, "service dns_udp: check.rise must be an integer"),
    (["services", 0, "check", "source"], "not-an-ip", "check.source: \"not-an-ip\" is not an IPv4 or IPv6 address"),
    (["services", 0, "check", "source"], "172.16.0.1", "check.source 172.16.0.1 is IPv4 but upstream fd00:16::13 is not"),
    (["services", 0, "check", "dns_name"], "a..example", "check.dns_name \"a..example\" is not a valid DNS name"),
    (["services", 0, "check", "dns_type"], "BOGUS", "check.dns_type must be one of"),
    (["services", 0, "check", "dns_rcodes"], [], "check.dns_rcodes must be a non-empty list"),
    (["services", 0, "check", "dns_rcodes"], ["NOERROR", "OKAY"], "check.dns_rcodes: \"OKAY\" is not one of"),
    (["services", 0, "check", "dns_proto"], "doh", "check.dns_proto must be udp or tcp"),
    (["services", 0, "check", "expect"], "([", "check.expect \"([\" is not a valid regular expression"),
    (["services", 0, "check", "intervall"], 2, "service dns_udp: check: unknown key intervall"),
    (["services", 1, "check", "http_path"], "health", "service web: check.http_path must start with /"),
    (["services", 1, "check", "http_path"], "/a b", "check.http_path must start with / and contain no spaces"),
    (["services", 1, "check", "http_host"], "a\r\nX: y", "check.http_host must contain no spaces"),
    (["services", 1, "check", "http_status"], [200, 700], "service web: check.http_status[] must be between 100 and 599"),
    (["services", 1, "check", "http_status"], [], "check.http_status must be a non-empty list"),
    (["services", 1, "check"], "http", "service web: check must be an object"),
    (["services", 1, "weight"], 2, "service web: unknown key weight"),
    (["services"], {}, "services must be a list"),
    (["services"], [1], "services[0] must be an object"),
    (["include_dir"], "relative/dir", "include_dir must be an absolute path"),
    (["state_file"], "", "state_file must be an absolute path"),
    (["textfile"], "metrics.prom", "textfile must be an absolute path"),
    (["nginx_test"], "nginx -t", "nginx_test must be a non-empty list of strings"),
    (["nginx_reload"], [], "nginx_reload must be a non-empty list of strings"),
    (["coalesce"], -1, "coalesce must be >= 0"),
    (["hold_down"], float("nan"), "hold_down must be"),
    (["min_reload_interval"], None, "min_reload_interval must be a number"),
    (["extra"], 1, "configuration: unknown key extra"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=["%s=%r" % (".".join(map(str, b[0])), b[1]) for b in BAD])
def test_invalid_configs_name_the_service_and_field(path, value, message):
    with pytest.raises(hc.ConfigError) as err:
        hc.parse_config(mutate(path, value))
    assert message in str(err.value)


def test_missing_check_and_port():
    with pytest.raises(hc.ConfigError, match="service web: check is required"):
        hc.parse_config(mutate(["services", 1, "check"], None, delete=True))
    with pytest.raises(hc.ConfigError, match="service dns_udp: port is required"):
        hc.parse_config(mutate(["services", 0, "port"], None, delete=True))


def test_top_level_must_be_an_object():
    with pytest.raises(hc.ConfigError, match="JSON object"):
        hc.parse_config([])


def test_source_of_the_right_family_is_accepted():
    cfg = mutate(["services", 0, "upstreams"], ["172.16.0.11"])
    cfg["services"][0]["check"]["source"] = "172.16.0.1"
    assert hc.parse_config(cfg).services[0].check.source == "172.16.0.1"


def test_upstreams_may_carry_their_own_server_parameters():
    # the role's form: a string when an upstream has no parameters, else {address, params}
    cfg = hc.parse_config({"services": [{"name": "dns", "port": 53, "server_params": "max_fails=0",
                                         "upstreams": ["10.0.0.1", {"address": "10.0.0.2", "params": " weight=3  backup "},
                                                       {"address": "10.0.0.3"}],
                                         "check": {"type": "dns"}}]})
    svc = cfg.services[0]
    assert svc.upstreams == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert svc.upstream_params == ("", "weight=3 backup", "")
    assert svc.params_of("10.0.0.2") == "max_fails=0 weight=3 backup"
    assert svc.params_of("10.0.0.1") == "max_fails=0"


def test_roles_default_check_keys_are_accepted():
    # what the role's template emits: every key, whatever the type
    keys = {"type": "dns", "interval": 1.0, "timeout": 0.5, "fall": 2, "rise": 2, "dns_name": ".", "dns_type": "SOA",
            "dns_proto": "udp", "dns_rcodes": ["NOERROR", "NXDOMAIN", "REFUSED"], "send": "", "expect": "", "http_path": "/",
            "http_host": "", "http_status": [200], "source": ""}
    cfg = hc.parse_config({"services": [{"name": "dns", "port": 53, "upstreams": ["10.0.0.1"], "server_params": "", "check": keys}]})
    assert cfg.services[0].check.dns_rcodes == (0, 3, 5)


# ---------------------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------------------

def write_config(tmp_path, cfg):
    path = tmp_path / "healthcheck.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_check_config_ok(tmp_path, capsys):
    assert hc.main(["check-config", "--config", write_config(tmp_path, base(tmp_path))]) == 0
    assert "is valid: 3 services, 6 upstreams" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["check-config"], ["render"], ["render", "--dry-run"], ["run"]])
def test_bad_config_exits_2_with_a_message(tmp_path, capsys, command):
    path = write_config(tmp_path, mutate(["services", 0, "check", "timeout"], 2.0))
    assert hc.main(command + ["--config", path]) == 2
    err = capsys.readouterr().err
    assert "service dns_udp: check.timeout (2) must be less than" in err and path in err


def test_unreadable_and_invalid_json(tmp_path, capsys):
    assert hc.main(["check-config", "--config", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{\"services\": [}")
    assert hc.main(["check-config", "--config", str(bad)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def render(tmp_path, capsys, *extra):
    assert hc.main(["render", "--config", str(tmp_path / "healthcheck.json")] + list(extra)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_render_writes_then_is_idempotent(tmp_path, capsys):
    write_config(tmp_path, base(tmp_path))
    inc = tmp_path / "upstreams"
    files = [str(inc / n) for n in ("dns_udp.conf", "syslog.conf", "web.conf")]
    assert render(tmp_path, capsys, "--dry-run") == {"changed": True, "files": files}
    assert not inc.exists()  # dry run writes nothing
    assert render(tmp_path, capsys) == {"changed": True, "files": files}
    assert (inc / "dns_udp.conf").read_text() == (
        "# managed by netops-healthcheck: membership of service dns_udp (do not edit)\n"
        "server 172.16.0.11:53;\n"
        "server 172.16.0.12:53;\n"
        "server [fd00:16::13]:53;\n")
    assert (inc / "web.conf").read_text() == (
        "# managed by netops-healthcheck: membership of service web (do not edit)\n"
        "server 172.16.0.11:80 weight=2 max_fails=0;\n"
        "server 172.16.0.12:80 weight=2 max_fails=0;\n")
    assert stat.S_IMODE(os.stat(inc / "web.conf").st_mode) == 0o644
    before = {f: open(f, "rb").read() for f in files}
    assert render(tmp_path, capsys) == {"changed": False, "files": []}
    assert render(tmp_path, capsys, "--dry-run") == {"changed": False, "files": []}
    assert {f: open(f, "rb").read() for f in files} == before
    assert sorted(os.listdir(inc)) == ["dns_udp.conf", "syslog.conf", "web.conf"]  # no temporary files left


def state_doc(services):
    return {"version": 1, "services": services}


def test_render_uses_the_state_file(tmp_path, capsys):
    cfg = base(tmp_path)
    write_config(tmp_path, cfg)
    os.makedirs(tmp_path / "state")
    down = {"state": "down", "since_epoch": 1796326801.5, "reason": "timeout after 0.5s"}
    (tmp_path / "state" / "state.json").write_text(json.dumps(state_doc({
        "dns_udp": {"upstreams": {"172.16.0.12:53": down, "172.16.0.11:53": {"state": "up"}}},
        "web": {"upstreams": {"172.16.0.11:80": down, "172.16.0.12:80": down}},  # all down: fail open
        "syslog": {"upstreams": {"172.16.0.11:514": down}},  # type none: always up
        "gone": {"upstreams": {"172.16.0.11:1": down}},
    })))
    result = render(tmp_path, capsys)
    assert result["changed"] is True
    inc = tmp_path / "upstreams"
    assert (inc / "dns_udp.conf").read_text() == (
        "# managed by netops-healthcheck: membership of service dns_udp (do not edit)\n"
        "server 172.16.0.11:53;\n"
        "server 172.16.0.12:53 down;   # down since 2026-12-03T19:40:01Z: timeout after 0.5s\n"
        "server [fd00:16::13]:53;\n")
    web = (inc / "web.conf").read_text()
    assert "FAIL OPEN" in web and " down" not in web.split("\n", 2)[2]
    assert "down" not in (inc / "syslog.conf").read_text().split("\n", 1)[1]
    assert render(tmp_path, capsys) == {"changed": False, "files": []}


def test_render_with_a_corrupt_state_file_starts_all_up(tmp_path, capsys):
    write_config(tmp_path, base(tmp_path))
    os.makedirs(tmp_path / "state")
    (tmp_path / "state" / "state.json").write_text("{not json")
    assert hc.main(["render", "--config", str(tmp_path / "healthcheck.json")]) == 0
    captured = capsys.readouterr()
    assert "unreadable" in captured.err and json.loads(captured.out)["changed"] is True
    assert " down" not in (tmp_path / "upstreams" / "dns_udp.conf").read_text()


def test_render_reports_a_write_error(tmp_path, capsys):
    cfg = copy.deepcopy(base(tmp_path))
    (tmp_path / "file").write_text("")
    cfg["include_dir"] = str(tmp_path / "file" / "sub")
    write_config(tmp_path, cfg)
    assert hc.main(["render", "--config", str(tmp_path / "healthcheck.json")]) == 1
    assert "cannot write" in capsys.readouterr().err
