"""The role's nginx templates as rendered by Ansible from the role's own service normalisation: the open-source
form with the health checker's include, the NGINX Plus form with native health checks (NGINX Plus itself is not
available to these tests: only what is rendered is checked), and the UDP defaults of Method 1."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
UPSTREAMS = ["172.16.0.11", "172.16.0.12"]
SERVICES = [
    {"name": "web", "protocol": "tcp", "port": 80, "http": True, "upstreams": UPSTREAMS},
    {"name": "dns_udp", "protocol": "udp", "port": 53, "upstreams": UPSTREAMS,
     "health_check": {"dns_name": "www.example.com", "dns_type": "A", "dns_rcodes": ["NOERROR"]}},
    {"name": "dns_tcp", "protocol": "tcp", "port": 53, "upstreams": UPSTREAMS},
]


RENDERED = ("stream.conf", "http.conf", "healthcheck.json", "netops-transparent-proxy.nft", "sysctl.conf")


def render(tmp_path, names=RENDERED, **extra):
    extra.setdefault("nginx_transparent_proxy_services", SERVICES)
    extra["out_dir"] = str(tmp_path)
    extra["rendered"] = list(names)
    extra["ansible_python_interpreter"] = sys.executable
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false", LC_ALL="C.UTF-8")
    env.pop("ANSIBLE_CONFIG", None)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
            os.path.join(HERE, "render.yml"), "-e", json.dumps(extra)]
    proc = subprocess.run(argv, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dict((name, (tmp_path / name).read_text()) for name in names)


def block(text, head):
    """The body of the block that starts with ``head {``."""
    match = re.search(r"^%s \{\n(.*?)^\}" % re.escape(head), text, re.M | re.S)
    assert match, "no block %r in:\n%s" % (head, text)
    return match.group(1)


def test_open_source_upstreams_come_from_the_checker_include(tmp_path):
    out = render(tmp_path, nginx_transparent_proxy_method="ip_transparency")
    for conf, name in (("http.conf", "web"), ("stream.conf", "dns_udp"), ("stream.conf", "dns_tcp")):
        body = block(out[conf], "upstream netops_%s" % name)
        assert "include /etc/nginx/netops-transparent-proxy/upstreams/%s.conf;" % name in body
        assert "server " not in body and "health_check" not in out[conf]
    config = json.loads(out["healthcheck.json"])
    checks = dict((s["name"], s["check"]) for s in config["services"])
    assert checks["web"]["type"] == "http" and checks["dns_tcp"]["type"] == "tcp"
    assert checks["dns_udp"]["type"] == "dns" and checks["dns_udp"]["dns_name"] == "www.example.com"
    assert checks["dns_udp"]["dns_rcodes"] == ["NOERROR"] and checks["dns_udp"]["interval"] == 1.0
    assert [s["upstreams"] for s in config["services"]] == [UPSTREAMS] * 3


def test_udp_of_ip_transparency_gets_the_articles_timeout_and_one_datagram_per_session(tmp_path):
    out = render(tmp_path, nginx_transparent_proxy_method="ip_transparency")
    udp = out["stream.conf"].split("listen 53 udp;")[1].split("}")[0]
    assert "proxy_timeout 1s;" in udp and "proxy_requests 1;" in udp
    tcp = out["stream.conf"].split("listen 53;")[1].split("}")[0]
    assert "proxy_timeout" not in tcp and "proxy_requests" not in tcp


def test_dsr_keeps_no_proxy_timeout(tmp_path):
    services = [s for s in SERVICES if s["protocol"] == "udp"]
    out = render(tmp_path, nginx_transparent_proxy_method="dsr_router_nat", nginx_transparent_proxy_services=services)
    assert "proxy_responses 0;" in out["stream.conf"]
    assert "proxy_timeout" not in out["stream.conf"] and "proxy_requests" not in out["stream.conf"]


def test_nginx_plus_renders_native_health_checks_with_a_dns_match(tmp_path):
    out = render(tmp_path, nginx_transparent_proxy_method="ip_transparency", nginx_transparent_proxy_nginx_plus=True)
    stream, http = out["stream.conf"], out["http.conf"]
    body = block(stream, "upstream netops_dns_udp")
    assert "zone netops_dns_udp 64k;" in body
    assert "server 172.16.0.11:53;" in body and "server 172.16.0.12:53;" in body and "include" not in body
    assert "health_check interval=1000ms fails=2 passes=2 udp match=netops_dns_udp;" in stream
    assert "health_check interval=1000ms fails=2 passes=2;" in stream  # dns_tcp: a TCP connect
    assert "health_check_timeout 500ms;" in stream
    match = block(stream, "match netops_dns_udp")
    send = re.search(r'send "([^"]+)";', match).group(1)
    raw = bytes(int(h, 16) for h in send.split("\\x")[1:])
    # ID 0x4e54, no flags, one question: www.example.com A IN
    assert raw == b"\x4e\x54\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01"
    expect = re.search(r'expect ~ "([^"]+)";', match).group(1)
    pattern = re.compile(expect.encode().decode("unicode_escape").encode("latin-1"))
    assert pattern.match(b"\x4e\x54\x84\x00rest") and pattern.match(b"\x4e\x54\x81\x80rest")
    assert not pattern.match(b"\x4e\x54\x84\x03rest"), "NXDOMAIN is not accepted"
    assert not pattern.match(b"\x4e\x54\x04\x00rest"), "a query (QR=0) is not an answer"
    assert "zone netops_web 64k;" in block(http, "upstream netops_web")
    assert "health_check interval=1000ms fails=2 passes=2 uri=/ match=netops_web;" in http
    assert "status 200;" in block(http, "match netops_web")
    assert not os.path.exists(str(tmp_path / "upstreams"))


def test_a_udp_service_on_another_port_gets_no_default_probe(tmp_path):
    # The preflight then refuses it by name (the lab's bad-input table); here: the normalised type is empty.
    ntp = {"name": "ntp", "protocol": "udp", "port": 123, "upstreams": UPSTREAMS}
    out = render(tmp_path, nginx_transparent_proxy_method="ip_transparency", nginx_transparent_proxy_services=[ntp],
                 nginx_transparent_proxy_health_check=False)
    assert "server 172.16.0.11:123;" in out["stream.conf"]
    assert json.loads(out["healthcheck.json"])["services"][0]["check"]["type"] == ""


# ---------------------------------------------------------------------------------------------------------
# the service model next to nginx's: per-upstream parameters, balancing methods, extra directives (issue 17)
# ---------------------------------------------------------------------------------------------------------

GOLDEN = os.path.join(HERE, "golden")
# Rendered by the role before the richer service model, from these inputs: existing inventories must keep
# getting the very same files.
GOLDEN_CASES = {
    "ip_transparency": {"nginx_transparent_proxy_method": "ip_transparency"},
    "ip_transparency_no_hc": {"nginx_transparent_proxy_method": "ip_transparency", "nginx_transparent_proxy_health_check": False},
    "dsr_router_nat": {"nginx_transparent_proxy_method": "dsr_router_nat",
                       "nginx_transparent_proxy_services": [s for s in SERVICES if s["protocol"] == "udp"]},
    "nginx_plus": {"nginx_transparent_proxy_method": "ip_transparency", "nginx_transparent_proxy_nginx_plus": True},
    "ip_transparency_egress": {"nginx_transparent_proxy_method": "ip_transparency", "nginx_transparent_proxy_upstream_egress": True},
    "dsr_router_nat_egress": {"nginx_transparent_proxy_method": "dsr_router_nat", "nginx_transparent_proxy_upstream_egress": True,
                              "nginx_transparent_proxy_services": [s for s in SERVICES if s["protocol"] == "udp"]},
}


# The one line the per-service methods (issue 14) add to every server block of a single-method configuration.
SERVICE_COMMENT = re.compile(r"^    # Service [A-Za-z0-9_]+: method (ip_transparency|dsr_router_nat|dsr_origin_nat)\.\n", re.M)


def test_string_upstreams_render_byte_for_byte_as_before(tmp_path):
    # The golden files were rendered by the role before services had their own method: apart from the comment
    # naming each server block's service and method, a single-method inventory gets the very same files.
    for case, extra in sorted(GOLDEN_CASES.items()):
        (tmp_path / case).mkdir()
        out = render(tmp_path / case, **extra)
        for name, text in out.items():
            with open(os.path.join(GOLDEN, case, name)) as handle:
                assert SERVICE_COMMENT.sub("", text) == handle.read(), "%s/%s differs from what the role rendered before" % (case, name)


# ---------------------------------------------------------------------------------------------------------
# one proxy, several methods: the method chosen per service (issue 14)
# ---------------------------------------------------------------------------------------------------------

MIXED_UDP = {"name": "dns_udp", "protocol": "udp", "port": 53, "upstreams": UPSTREAMS,
             "health_check": {"dns_name": "www.example.com", "dns_type": "A", "dns_rcodes": ["NOERROR"]}}
MIXED = {
    # HTTP and DNS over TCP by Method 1, DNS over UDP by Method 2a / 2b, on the same upstreams
    "mixed_1_2a": {"nginx_transparent_proxy_services": [SERVICES[0], dict(MIXED_UDP, method="dsr_router_nat"), SERVICES[2]]},
    "mixed_1_2b": {"nginx_transparent_proxy_services": [SERVICES[0], dict(MIXED_UDP, method="dsr_origin_nat"), SERVICES[2]]},
    # the role's method the DSR one: the TCP services say ip_transparency themselves
    "mixed_1_2a_egress": {"nginx_transparent_proxy_method": "dsr_router_nat", "nginx_transparent_proxy_upstream_egress": True,
                          "nginx_transparent_proxy_services": [dict(SERVICES[0], method="ip_transparency"), MIXED_UDP,
                                                               dict(SERVICES[2], method="ip_transparency")]},
}


def test_mixed_methods_render_as_reviewed(tmp_path):
    for case, extra in sorted(MIXED.items()):
        (tmp_path / case).mkdir()
        out = render(tmp_path / case, **extra)
        for name, text in out.items():
            with open(os.path.join(GOLDEN, case, name)) as handle:
                assert text == handle.read(), "%s/%s differs from the reviewed golden file" % (case, name)


def server_blocks(text):
    return re.findall(r"^server \{\n(.*?)^\}", text, re.M | re.S)


def test_every_server_block_starts_with_its_service_and_method(tmp_path):
    out = render(tmp_path, **MIXED["mixed_1_2a"])
    firsts = [b.splitlines()[0] for b in server_blocks(out["stream.conf"]) + server_blocks(out["http.conf"])]
    assert firsts == ["    # Service dns_udp: method dsr_router_nat.", "    # Service dns_tcp: method ip_transparency.",
                      "    # Service web: method ip_transparency."]


def test_mixed_header_names_every_method_and_single_keeps_the_troubleshooters_line(tmp_path):
    (tmp_path / "mixed").mkdir()
    (tmp_path / "single").mkdir()
    mixed = render(tmp_path / "mixed", **MIXED["mixed_1_2b"])
    assert "# Methods: ip_transparency, dsr_origin_nat.\n" in mixed["stream.conf"]
    assert "# Method: " not in mixed["stream.conf"] + mixed["http.conf"]
    assert "Methods: ip_transparency, dsr_origin_nat." in mixed["http.conf"]
    single = render(tmp_path / "single", nginx_transparent_proxy_method="ip_transparency")
    assert "\n# Method: ip_transparency.\n" in single["stream.conf"] and "Methods" not in single["stream.conf"]


def test_each_service_is_proxied_by_its_own_method(tmp_path):
    out = render(tmp_path, **MIXED["mixed_1_2a"])
    blocks = dict((re.search(r"# Service (\w+):", b).group(1), b) for b in server_blocks(out["stream.conf"]) + server_blocks(out["http.conf"]))
    assert "proxy_bind $remote_addr:$remote_port transparent;" in blocks["dns_udp"] and "proxy_responses 0;" in blocks["dns_udp"]
    assert "proxy_timeout" not in blocks["dns_udp"] and "proxy_requests" not in blocks["dns_udp"]
    assert "proxy_bind $remote_addr transparent;" in blocks["dns_tcp"] and "proxy_responses" not in blocks["dns_tcp"]
    assert "proxy_bind $remote_addr transparent;" in blocks["web"]


def test_each_methods_nftables_rules_cover_only_its_services(tmp_path):
    out = render(tmp_path, **MIXED["mixed_1_2a_egress"])
    nft = out["netops-transparent-proxy.nft"]
    prerouting, forward, postrouting = (re.search(r"chain %s \{\n(.*?)\n\t\}" % c, nft, re.S).group(1)
                                        for c in ("prerouting", "forward", "postrouting"))
    assert 'comment "web"' in prerouting and 'comment "dns_tcp"' in prerouting and "dns_udp" not in prerouting
    assert "udp sport 53 accept comment \"dns_udp\"" in forward and "web" not in forward and "dns_tcp" not in forward
    assert "udp sport 53 return comment \"dns_udp\"" in postrouting and "tcp" not in postrouting
    assert "net.ipv4.udp_early_demux = 0" in out["sysctl.conf"]
    (tmp_path / "b").mkdir()
    only_dsr_origin = render(tmp_path / "b", nginx_transparent_proxy_method="dsr_origin_nat", nginx_transparent_proxy_services=[MIXED_UDP])
    assert "chain prerouting" not in only_dsr_origin["netops-transparent-proxy.nft"]
    assert "udp_early_demux" not in only_dsr_origin["sysctl.conf"]


# ---------------------------------------------------------------------------------------------------------
# IPv4 and IPv6 (issue 16): one listener and one upstream group per family of a service's upstreams
# ---------------------------------------------------------------------------------------------------------

UPSTREAMS6 = ["fd00:16::11", "fd00:16::12"]
DUAL_STACK_SERVICES = [
    # Method 1, both families: two listeners, netops_web and netops_web_v6
    {"name": "web", "protocol": "tcp", "port": 80, "http": True, "upstreams": UPSTREAMS + UPSTREAMS6},
    # Method 2a, both families; the probe source is IPv6, so only the IPv6 group's probes use it
    {"name": "dns_udp", "protocol": "udp", "port": 53, "method": "dsr_router_nat",
     "upstreams": UPSTREAMS + [{"address": "fd00:16::11", "weight": 2}, "fd00:16::12"],
     "health_check": {"dns_name": "www.example.com", "dns_type": "AAAA", "dns_rcodes": ["NOERROR"], "source": "fd00:16::1"}},
    # Method 1, IPv6 only, on one address
    {"name": "dns_tcp", "protocol": "tcp", "port": 53, "listen_address": "2001:db8:99::10", "upstreams": UPSTREAMS6},
    # Method 2b, both families
    {"name": "syslog", "protocol": "udp", "port": 514, "method": "dsr_origin_nat", "health_check": {"type": "none"},
     "upstreams": ["172.16.0.13", "fd00:16::13"]},
]
DUAL_STACK = {"dual_stack": {"nginx_transparent_proxy_method": "ip_transparency", "nginx_transparent_proxy_services": DUAL_STACK_SERVICES}}
UNIT = "netops-transparent-proxy.service"


def test_dual_stack_renders_as_reviewed(tmp_path):
    out = render(tmp_path, names=RENDERED + (UNIT,), **DUAL_STACK["dual_stack"])
    for name, text in out.items():
        with open(os.path.join(GOLDEN, "dual_stack", name)) as handle:
            assert text == handle.read(), "dual_stack/%s differs from the reviewed golden file" % name


def test_router_nat_of_ipv6_upstreams_only_leaves_ipv4_forwarding_alone(tmp_path):
    """issue 16 review: IPv4 forwarding is for router NAT of IPv4 upstreams (or the egress), IPv6 forwarding for IPv6
    upstreams; the addresses are canonical whatever their spelling (one nft element, one server)."""
    services = [{"name": "dns_udp", "protocol": "udp", "port": 53, "method": "dsr_router_nat",
                 "upstreams": ["FD00:16:0::11", {"address": "fd00:16::0:12", "weight": 2}]}]
    out = render(tmp_path, nginx_transparent_proxy_method="ip_transparency", nginx_transparent_proxy_health_check=False,
                 nginx_transparent_proxy_services=services)
    sysctl = out["sysctl.conf"]
    assert "net.ipv4.ip_forward" not in sysctl
    assert "net.ipv6.conf.all.forwarding = 1" in sysctl and "net.ipv4.udp_early_demux = 0" in sysctl
    assert "ip6 saddr { fd00:16::11, fd00:16::12 } udp sport 53 accept" in out["netops-transparent-proxy.nft"]
    assert block(out["stream.conf"], "upstream netops_dns_udp_v6").splitlines() == [
        "    server [fd00:16::11]:53;", "    server [fd00:16::12]:53 weight=2;"]


def test_each_family_has_its_own_listener_group_and_bind(tmp_path):
    out = render(tmp_path, **DUAL_STACK["dual_stack"])
    stream, http = out["stream.conf"], out["http.conf"]
    blocks = dict((re.search(r"proxy_pass (?:http://)?netops_(\w+);", b).group(1), b) for b in server_blocks(stream) + server_blocks(http))
    assert sorted(blocks) == ["dns_tcp_v6", "dns_udp", "dns_udp_v6", "syslog", "syslog_v6", "web", "web_v6"]
    # the troubleshooter's marker stays the service's first line in both families' blocks
    assert all(b.startswith("    # Service %s: method " % re.sub("_v6$", "", g)) for g, b in blocks.items())
    assert "listen 53 udp;" in blocks["dns_udp"] and "proxy_bind $remote_addr:$remote_port transparent;" in blocks["dns_udp"]
    # DSR over IPv6: brackets, or nginx parses 2001:db8:99::1:4000 as an address (plan fact F2)
    assert "listen [::]:53 udp;" in blocks["dns_udp_v6"] and "proxy_bind [$remote_addr]:$remote_port transparent;" in blocks["dns_udp_v6"]
    assert "proxy_responses 0;" in blocks["dns_udp_v6"] and "proxy_bind [$remote_addr]:$remote_port transparent;" in blocks["syslog_v6"]
    assert "listen [2001:db8:99::10]:53;" in blocks["dns_tcp_v6"] and "proxy_bind $remote_addr transparent;" in blocks["dns_tcp_v6"]
    assert "listen 80;" in blocks["web"] and "listen [::]:80;" in blocks["web_v6"] and "proxy_bind $remote_addr transparent;" in blocks["web_v6"]
    assert "include /etc/nginx/netops-transparent-proxy/upstreams/dns_udp_v6.conf;" in block(stream, "upstream netops_dns_udp_v6")
    assert "include /etc/nginx/netops-transparent-proxy/upstreams/web_v6.conf;" in block(http, "upstream netops_web_v6")
    config = dict((s["name"], s) for s in json.loads(out["healthcheck.json"])["services"])
    assert sorted(config) == ["dns_tcp_v6", "dns_udp", "dns_udp_v6", "syslog", "syslog_v6", "web", "web_v6"]
    assert config["dns_udp"]["upstreams"] == UPSTREAMS and config["dns_udp"]["check"]["source"] == ""
    assert config["dns_udp_v6"]["upstreams"] == [{"address": "fd00:16::11", "params": "weight=2"}, "fd00:16::12"]
    assert config["dns_udp_v6"]["check"]["source"] == "fd00:16::1"


def test_ipv6_servers_are_bracketed_without_the_checker(tmp_path):
    out = render(tmp_path, nginx_transparent_proxy_health_check=False, **DUAL_STACK["dual_stack"])
    assert block(out["stream.conf"], "upstream netops_dns_udp_v6").splitlines() == [
        "    server [fd00:16::11]:53 weight=2;", "    server [fd00:16::12]:53;"]
    assert block(out["stream.conf"], "upstream netops_dns_udp").splitlines() == ["    server 172.16.0.11:53;", "    server 172.16.0.12:53;"]


def test_dual_stack_kernel_side_per_family(tmp_path):
    out = render(tmp_path, names=RENDERED + (UNIT,), **DUAL_STACK["dual_stack"])
    nft = out["netops-transparent-proxy.nft"]
    prerouting, forward = (re.search(r"chain %s \{\n(.*?)\n\t\}" % c, nft, re.S).group(1) for c in ("prerouting", "forward"))
    # the rules name their upstreams inline: no set of the IPv6 upstreams (issue 16 review: it was never used)
    assert "upstreams6" not in nft and "ipv6_addr" not in nft
    assert 'ip6 saddr { fd00:16::11, fd00:16::12 } tcp sport 80 meta mark set 0x1 comment "web_v6"' in prerouting
    assert 'ip saddr { 172.16.0.11, 172.16.0.12 } tcp sport 80 meta mark set 0x1 comment "web"' in prerouting
    assert 'ip6 saddr { fd00:16::11, fd00:16::12 } tcp sport 53 meta mark set 0x1 comment "dns_tcp_v6"' in prerouting
    assert "syslog" not in prerouting and "dns_udp" not in prerouting
    assert 'ip6 saddr { fd00:16::11, fd00:16::12 } udp sport 53 accept comment "dns_udp_v6"' in forward
    assert "net.ipv6.conf.all.forwarding = 1" in out["sysctl.conf"] and "net.ipv4.udp_early_demux = 0" in out["sysctl.conf"]
    unit = out[UNIT]
    assert "After=systemd-sysctl.service" in unit and "ExecStart=ip -4 route replace local 0.0.0.0/0 dev lo table 100" in unit
    assert "ExecStart=ip -6 rule add priority 100 fwmark 1 lookup 100" in unit and "ExecStart=ip -6 route replace local ::/0 dev lo table 100" in unit
    # without IPv6 upstreams: neither the IPv6 set nor the IPv6 lines (the IPv4 golden files stay as they were)
    (tmp_path / "v4").mkdir()
    v4 = render(tmp_path / "v4", names=RENDERED + (UNIT,), nginx_transparent_proxy_method="ip_transparency")
    assert "ipv6" not in v4["netops-transparent-proxy.nft"] and "ipv6" not in v4["sysctl.conf"]
    assert "ip -6" not in v4[UNIT] and "systemd-sysctl" not in v4[UNIT]
    # IPv6 only with Method 1: no IPv4 rule at boot, no IPv6 forwarding
    (tmp_path / "v6").mkdir()
    v6 = render(tmp_path / "v6", names=RENDERED + (UNIT,), nginx_transparent_proxy_method="ip_transparency",
                nginx_transparent_proxy_services=[DUAL_STACK_SERVICES[2]])
    assert "ip -4" not in v6[UNIT] and "ip -6 rule add" in v6[UNIT]
    assert "set upstreams {" not in v6["netops-transparent-proxy.nft"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="nft -c needs root and nft")
def test_nft_accepts_every_rendered_table(tmp_path):
    for case, extra in sorted(list(MIXED.items()) + list(GOLDEN_CASES.items()) + list(DUAL_STACK.items())):
        (tmp_path / case).mkdir()
        render(tmp_path / case, **extra)
        proc = subprocess.run(["nft", "-c", "-f", str(tmp_path / case / "netops-transparent-proxy.nft")],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, "%s: %s" % (case, proc.stderr)


RICH = [
    {"name": "web", "protocol": "tcp", "port": 80, "http": True, "balance": "least_conn",
     "upstreams": [{"address": "172.16.0.11", "weight": 3, "max_fails": 2, "fail_timeout": "30s"},
                   {"address": "172.16.0.12", "backup": True}],
     "upstream_extra": ["keepalive 16"], "server_extra": ["proxy_connect_timeout 2s;", "proxy_set_header X-Proxy netops"]},
    {"name": "dns_udp", "protocol": "udp", "port": 53, "balance": "hash", "hash_key": "$remote_addr", "hash_consistent": True,
     "upstreams": ["172.16.0.11", {"address": "172.16.0.12", "weight": 2, "max_conns": 100}]},
    {"name": "dns_tcp", "protocol": "tcp", "port": 53, "balance": "random_two",
     "upstreams": [{"address": "172.16.0.11"}, "172.16.0.12"], "server_extra": ["proxy_connect_timeout 1s"]},
]


def test_checker_config_carries_each_upstreams_parameters_and_the_block_its_balancing(tmp_path):
    out = render(tmp_path, nginx_transparent_proxy_method="ip_transparency", nginx_transparent_proxy_services=RICH)
    web = block(out["http.conf"], "upstream netops_web")
    assert web.splitlines() == [
        "    least_conn;",
        "    keepalive 16;",
        "    # Membership written by netops-healthcheck.service (active health checks).",
        "    include /etc/nginx/netops-transparent-proxy/upstreams/web.conf;"]
    location = out["http.conf"].split("location / {")[1].split("}")[0]
    assert "proxy_pass http://netops_web;\n        proxy_connect_timeout 2s;\n        proxy_set_header X-Proxy netops;\n" in location
    assert block(out["stream.conf"], "upstream netops_dns_udp").splitlines()[0] == "    hash $remote_addr consistent;"
    assert block(out["stream.conf"], "upstream netops_dns_tcp").splitlines()[0] == "    random two least_conn;"
    tcp = out["stream.conf"].split("listen 53;")[1].split("}")[0]
    assert tcp.rstrip().endswith("proxy_connect_timeout 1s;")
    services = dict((s["name"], s) for s in json.loads(out["healthcheck.json"])["services"])
    assert services["web"]["upstreams"] == [{"address": "172.16.0.11", "params": "weight=3 max_fails=2 fail_timeout=30s"},
                                            {"address": "172.16.0.12", "params": "backup"}]
    assert services["dns_udp"]["upstreams"] == ["172.16.0.11", {"address": "172.16.0.12", "params": "weight=2 max_conns=100"}]
    assert services["dns_tcp"]["upstreams"] == ["172.16.0.11", "172.16.0.12"]


def test_without_the_checker_the_servers_carry_their_parameters(tmp_path):
    out = render(tmp_path, nginx_transparent_proxy_method="ip_transparency", nginx_transparent_proxy_services=RICH,
                 nginx_transparent_proxy_health_check=False)
    assert block(out["http.conf"], "upstream netops_web").splitlines() == [
        "    least_conn;",
        "    keepalive 16;",
        "    server 172.16.0.11:80 weight=3 max_fails=2 fail_timeout=30s;",
        "    server 172.16.0.12:80 backup;"]
    assert block(out["stream.conf"], "upstream netops_dns_udp").splitlines() == [
        "    hash $remote_addr consistent;",
        "    server 172.16.0.11:53;",
        "    server 172.16.0.12:53 weight=2 max_conns=100;"]


def test_nginx_plus_servers_carry_their_parameters(tmp_path):
    out = render(tmp_path, nginx_transparent_proxy_method="ip_transparency", nginx_transparent_proxy_services=RICH,
                 nginx_transparent_proxy_nginx_plus=True)
    assert block(out["http.conf"], "upstream netops_web").splitlines() == [
        "    least_conn;",
        "    zone netops_web 64k;",
        "    keepalive 16;",
        "    server 172.16.0.11:80 weight=3 max_fails=2 fail_timeout=30s;",
        "    server 172.16.0.12:80 backup;"]
    assert "health_check interval=1000ms fails=2 passes=2 uri=/ match=netops_web;" in out["http.conf"]


def test_dsr_checker_includes_carry_the_parameters(tmp_path):
    # The checker's own `render`, from the configuration the role wrote: what nginx includes under DSR.
    services = [{"name": "dns_udp", "protocol": "udp", "port": 53, "balance": "least_conn",
                 "upstreams": [{"address": "172.16.0.11", "weight": 4}, "172.16.0.12", {"address": "172.16.0.13", "backup": True}]}]
    out = render(tmp_path, nginx_transparent_proxy_method="dsr_router_nat", nginx_transparent_proxy_services=services)
    config = json.loads(out["healthcheck.json"])
    config.update(include_dir=str(tmp_path / "upstreams"), state_file=str(tmp_path / "state.json"))
    (tmp_path / "hc.json").write_text(json.dumps(config))
    program = os.path.join(ROOT, "roles", "nginx_transparent_proxy", "files", "netops-healthcheck.py")
    subprocess.run([sys.executable, program, "render", "--config", str(tmp_path / "hc.json")], check=True, capture_output=True)
    assert (tmp_path / "upstreams" / "dns_udp.conf").read_text().splitlines()[1:] == [
        "server 172.16.0.11:53 weight=4;", "server 172.16.0.12:53;", "server 172.16.0.13:53 backup;"]
    assert block(out["stream.conf"], "upstream netops_dns_udp").splitlines()[0] == "    least_conn;"


def test_udp_listen_parameters_reach_every_udp_listen_and_no_tcp_one(tmp_path):
    v6 = {"name": "dns_udp6", "protocol": "udp", "port": 53, "upstreams": ["fd00:16::11"], "health_check": {"type": "none"}}
    stream = render(tmp_path, ("stream.conf",), nginx_transparent_proxy_services=SERVICES + [v6],
                    nginx_transparent_proxy_udp_reuseport=True, nginx_transparent_proxy_udp_rcvbuf="4m")["stream.conf"]
    listens = sorted(line.strip() for line in stream.splitlines() if line.strip().startswith("listen "))
    assert listens == ["listen 53 udp reuseport rcvbuf=4m;", "listen 53;", "listen [::]:53 udp reuseport rcvbuf=4m;"]


def test_udp_listen_parameters_default_to_none(tmp_path):
    stream = render(tmp_path, ("stream.conf",))["stream.conf"]
    assert "listen 53 udp;" in stream and "reuseport" not in stream and "rcvbuf" not in stream
