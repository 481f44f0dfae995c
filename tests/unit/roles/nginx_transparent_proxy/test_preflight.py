"""The nginx_transparent_proxy preflight's refusals, run on the controller (no lab): every refusal names the
offending item (service, value) and the rule it breaks. One ansible-playbook run for every case: each case is
an inventory host with its own role variables (issue 13, defect 9)."""

import json
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
UPSTREAMS = ["172.16.0.11", "172.16.0.12"]


def svc(**extra):
    service = {"name": "dns_udp", "protocol": "udp", "port": 53, "upstreams": UPSTREAMS}
    service.update(extra)
    return service


# (case, role variables, parts the refusal must contain). state absent skips the checks that need the lab's
# interfaces, so that each case is refused by the check it is about or passes.
CASES = [
    ("dsr-udp-upstream-port-differs", {"nginx_transparent_proxy_method": "dsr_router_nat",
                                       "nginx_transparent_proxy_services": [
                                           svc(), svc(name="dns_alt", port=54, upstream_port=5353, health_check={"type": "dns"})]},
     ["Service dns_alt", "upstream_port 5353", "port 54", "upstream_port must equal"]),
    ("dsr-origin-udp-upstream-port-differs", {"nginx_transparent_proxy_method": "dsr_origin_nat",
                                              "nginx_transparent_proxy_services": [svc(name="dns_alt", upstream_port=5353, health_check={"type": "dns"})]},
     ["Service dns_alt", "upstream_port 5353", "dsr_origin_nat"]),
    ("dsr-tcp-service", {"nginx_transparent_proxy_method": "dsr_router_nat",
                         "nginx_transparent_proxy_services": [svc(), svc(name="web", protocol="tcp", port=80)]},
     ["Service web", "protocol tcp", "works for UDP only"]),
    ("service-port-out-of-range", {"nginx_transparent_proxy_services": [svc(name="big", port=70000)]},
     ["Service big", "port 70000", "1..65535"]),
    ("service-bad-name", {"nginx_transparent_proxy_services": [svc(name="dns-udp")]},
     ["Service dns-udp", "name", "[A-Za-z0-9_]+"]),
    ("udp-http-service", {"nginx_transparent_proxy_services": [svc(name="weird", http=True)]},
     ["Service weird", "http: true", "protocol tcp"]),
    ("duplicate-service-names", {"nginx_transparent_proxy_services": [svc(), svc(port=54, health_check={"type": "dns"})]},
     ["dns_udp", "more than once"]),
    ("duplicate-listen-ports", {"nginx_transparent_proxy_services": [svc(), svc(name="other")]},
     ["udp/53", "dns_udp", "other"]),
    # IPv4 and IPv6 (issue 16): per-family groups, and what has no IPv6 counterpart
    ("good-dual-stack", {"nginx_transparent_proxy_services": [
        svc(upstreams=["172.16.0.11", "2001:db8::11"]), svc(name="web", protocol="tcp", port=80, http=True, upstreams=["fd00:16::11"]),
        svc(name="dns_dsr", port=5353, upstream_port=5353, method="dsr_router_nat", health_check={"type": "dns"},
            upstreams=["172.16.0.13", {"address": "fd00:16::13", "weight": 2}]),
        svc(name="dns_origin", port=5354, upstream_port=5354, method="dsr_origin_nat", health_check={"type": "dns"},
            listen_address="2001:db8:99::10", upstreams=["fd00:16::14"])]}, None),
    ("upstream-not-an-address", {"nginx_transparent_proxy_services": [svc(upstreams=["172.16.0.11", "172.16.0.300", "fd00:16::zz"])]},
     ["Service dns_udp", "Not IP addresses: 172.16.0.300, fd00:16::zz", "IPv4 or IPv6"], ["172.16.0.11,"]),
    ("link-local-upstream", {"nginx_transparent_proxy_services": [svc(upstreams=["fd00:16::11", "fe80::11", {"address": "fe80::12%eth1"}])]},
     ["Service dns_udp", "Link-local (fe80::/10): fe80::11, fe80::12%eth1", "zone"], ["fd00:16::11,"]),
    ("listen-ipv6-upstreams-ipv4", {"nginx_transparent_proxy_services": [svc(listen_address="2001:db8:99::10")]},
     ["Service dns_udp", "listen_address 2001:db8:99::10 is IPv6 while upstreams 172.16.0.11, 172.16.0.12 are IPv4",
      "leave listen_address empty"]),
    ("listen-ipv4-dual-stack-upstreams", {"nginx_transparent_proxy_services": [
        svc(listen_address="192.0.2.10", upstreams=["172.16.0.11", "fd00:16::11", "fd00:16::12"])]},
     ["Service dns_udp", "listen_address 192.0.2.10 is IPv4 while upstreams fd00:16::11, fd00:16::12 are IPv6"], ["172.16.0.11"]),
    ("listen-not-an-address", {"nginx_transparent_proxy_services": [svc(listen_address="lb.example.com")]},
     ["Service dns_udp", "listen_address lb.example.com is not an IP address"]),
    ("group-name-clash", {"nginx_transparent_proxy_services": [
        svc(name="dns", upstreams=["172.16.0.11", "fd00:16::11"]),
        svc(name="dns_v6", port=5353, upstream_port=53, health_check={"type": "dns"}, upstreams=["172.16.0.12"])]},
     ["netops_dns_v6 would serve both", "the IPv6 upstreams of service dns", "the IPv4 upstreams of service dns_v6"]),
    ("egress-with-ipv6", {"nginx_transparent_proxy_upstream_egress": True, "nginx_transparent_proxy_services": [
        svc(), svc(name="web", protocol="tcp", port=80, upstreams=["fd00:16::11"])]},
     ["nginx_transparent_proxy_upstream_egress", "no NAT66", "service web has IPv6 upstreams"], ["service dns_udp"]),
    ("tc-backend-with-ipv6-router-nat", {"nginx_transparent_proxy_tc_nat_backend": "tc", "nginx_transparent_proxy_services": [
        svc(method="dsr_router_nat", upstreams=["172.16.0.11", "fd00:16::11"]),
        svc(name="web", protocol="tcp", port=80, upstreams=["fd00:16::11"])]},
     ["nginx_transparent_proxy_tc_nat_backend: tc", "service dns_udp (dsr_router_nat) has IPv6 upstreams",
      "the tc nat action is IPv4-only; use nftables or auto"], ["service web"]),
    ("good-tc-backend-ipv4-router-nat", {"nginx_transparent_proxy_tc_nat_backend": "tc", "nginx_transparent_proxy_services": [
        svc(method="dsr_router_nat"), svc(name="web", protocol="tcp", port=80, upstreams=["fd00:16::11"])]}, None),
    ("proxy-pair-with-ipv6", {"nginx_transparent_proxy_public_address_floating": True, "nginx_transparent_proxy_services": [
        svc(upstreams=["fd00:16::11"])]},
     ["nginx_transparent_proxy_public_address_floating", "service dns_udp has IPv6 upstreams", "proxy pair is not supported"]),
    ("public-address6-not-ipv6", {"nginx_transparent_proxy_public_address6": "192.0.2.10", "nginx_transparent_proxy_services": [svc()]},
     ["nginx_transparent_proxy_public_address6 192.0.2.10", "IPv6 address"]),
    ("client-network6-host-bits", {"nginx_transparent_proxy_client_networks": ["2001:db8:99::/64", "2001:db8:98::1/64"]},
     ["2001:db8:98::1/64", "host bits"], ["2001:db8:99::/64"]),
    ("health-timeout-not-below-interval", {"nginx_transparent_proxy_services": [
        svc(health_check={"interval": 1, "timeout": 1})]},
     ["Service dns_udp", "timeout 1", "below interval 1"]),
    ("udp-without-probe", {"nginx_transparent_proxy_services": [svc(name="ntp", port=123)]},
     ["Service ntp", "no default"]),
    ("client-network-host-bits", {"nginx_transparent_proxy_client_networks": ["10.0.0.0/8", "10.20.30.40/8"]},
     ["10.20.30.40/8", "host bits"]),
    ("route-table-main", {"nginx_transparent_proxy_route_table": 254},
     ["nginx_transparent_proxy_route_table 254", "254 main"]),
    ("fwmark-zero", {"nginx_transparent_proxy_fwmark": 0},
     ["nginx_transparent_proxy_fwmark 0", "1..4294967295"]),
    ("unknown-method", {"nginx_transparent_proxy_method": "dsr_magic"},
     ["dsr_magic", "must be one of"]),
    ("udp-rcvbuf-not-a-size", {"nginx_transparent_proxy_udp_rcvbuf": "4 MB"},
     ["nginx_transparent_proxy_udp_rcvbuf 4 MB", "not a size nginx reads", "512k, 4m"]),
    ("no-udp-service-for-dsr", {"nginx_transparent_proxy_method": "dsr_router_nat", "nginx_transparent_proxy_state": "present",
                                "nginx_transparent_proxy_services": []},
     ["nginx_transparent_proxy_services", "non-empty"]),
    # the service model next to nginx's (issue 17): refusals nginx would make at reload time, and typos
    ("backup-with-hash", {"nginx_transparent_proxy_services": [
        svc(balance="hash", hash_key="$remote_addr", upstreams=["172.16.0.11", {"address": "172.16.0.12", "backup": True}])]},
     ["Service dns_udp", "upstream 172.16.0.12", "backup", "balance hash", "nginx refuses"]),
    ("backup-with-random-two", {"nginx_transparent_proxy_services": [
        svc(balance="random_two", upstreams=[{"address": "172.16.0.11", "backup": True}, "172.16.0.12"])]},
     ["Service dns_udp", "upstream 172.16.0.11", "balance random_two"]),
    ("every-upstream-backup", {"nginx_transparent_proxy_services": [
        svc(upstreams=[{"address": "172.16.0.11", "backup": True}, {"address": "172.16.0.12", "backup": True}])]},
     ["Service dns_udp", "every upstream is a backup", "no servers in upstream"]),
    ("bad-upstream-parameters", {"nginx_transparent_proxy_services": [
        svc(upstreams=[{"address": "172.16.0.11", "weight": 0, "max_fails": -1, "fail_timeout": "10 s", "backup": "yes"},
                       {"address": "172.16.0.12", "wieght": 2}, 5])]},
     ["Service dns_udp", "upstream 172.16.0.11", "weight 0 must be an integer >= 1", "max_fails -1 must be an integer >= 0",
      "fail_timeout \"10 s\" must be an nginx time", "backup \"yes\" must be true or false",
      "upstream 172.16.0.12", "unknown key wieght", "upstream 5: must be an address or a mapping"]),
    # per upstream group, as nginx checks them (issue 16 review): one family of backups only fails nginx
    ("every-ipv6-upstream-backup", {"nginx_transparent_proxy_services": [
        svc(upstreams=["172.16.0.11", {"address": "fd00:16::11", "backup": True}, {"address": "fd00:16::12", "backup": True}])]},
     ["Service dns_udp", "every IPv6 upstream is a backup (upstream netops_dns_udp_v6)", "no servers in upstream"]),
    ("every-ipv4-upstream-backup", {"nginx_transparent_proxy_services": [
        svc(upstreams=[{"address": "172.16.0.11", "backup": True}, "fd00:16::11"])]},
     ["Service dns_udp", "every IPv4 upstream is a backup (upstream netops_dns_udp)"], ["IPv6 upstream"]),
    # addresses compare canonically (issue 16 review)
    ("ipv6-upstream-listed-twice-spelled-differently", {"nginx_transparent_proxy_services": [
        svc(upstreams=["fd00:16::11", {"address": "FD00:16:0::11", "weight": 2}])]},
     ["Service dns_udp", "upstream fd00:16::11 is listed more than once"]),
    ("methods-share-an-ipv6-upstream-spelled-differently", {"nginx_transparent_proxy_services": [
        svc(method="dsr_router_nat", upstreams=["fd00:16::12"]),
        svc(name="dns_alt", port=5353, upstream_port=53, health_check={"type": "dns"}, upstreams=["fd00:16:0:0::12"])]},
     ["Service dns_udp (dsr_router_nat)", "service dns_alt (ip_transparency)", "udp upstream_port 53 on fd00:16::12", "cannot be told apart"]),
    ("upstream-without-address", {"nginx_transparent_proxy_services": [svc(upstreams=["172.16.0.11", {"weight": 2}])]},
     ["Service dns_udp", "address is required"]),
    ("upstream-listed-twice", {"nginx_transparent_proxy_services": [svc(upstreams=["172.16.0.11", {"address": "172.16.0.11", "weight": 2}])]},
     ["Service dns_udp", "172.16.0.11 is listed more than once"]),
    ("unknown-balance", {"nginx_transparent_proxy_services": [svc(balance="ip_hash")]},
     ["Service dns_udp", "balance \"ip_hash\" must be one of round_robin, least_conn, random, random_two, hash"]),
    ("hash-without-key", {"nginx_transparent_proxy_services": [svc(balance="hash", hash_consistent=True)]},
     ["Service dns_udp", "balance hash needs hash_key"]),
    ("hash-key-without-hash", {"nginx_transparent_proxy_services": [svc(hash_key="$remote_addr", hash_consistent=True)]},
     ["Service dns_udp", "hash_key and hash_consistent are only for balance hash (balance is round_robin)"]),
    ("bad-extra-directives", {"nginx_transparent_proxy_services": [
        svc(upstream_extra=["keepalive 8", "server 172.16.0.99:53", "zone x 64k; least_conn"],
            server_extra=["proxy_connect_timeout 1s;", "proxy_bind 10.0.0.1", "location / { return 200; }", 7])]},
     ["Service dns_udp", "upstream_extra", "server 172.16.0.99:53", "reserved", "zone x 64k; least_conn", "one directive",
      "server_extra", "proxy_bind 10.0.0.1", "location / { return 200; }", "7"],
     ["keepalive 8", "proxy_connect_timeout 1s"]),
    ("good-model", {"nginx_transparent_proxy_services": [
        svc(balance="hash", hash_key="$remote_addr$remote_port", hash_consistent=True,
            upstreams=["172.16.0.11", {"address": "172.16.0.12", "weight": 3, "max_fails": 0, "fail_timeout": "1m30s", "max_conns": 10}],
            upstream_extra=["keepalive 8;"], server_extra=["proxy_connect_timeout 1s"]),
        svc(name="web", protocol="tcp", port=80, http=True, balance="least_conn",
            upstreams=[{"address": "172.16.0.11", "weight": 2}, {"address": "172.16.0.12", "backup": True}])]}, None),
    ("good-dsr", {"nginx_transparent_proxy_method": "dsr_router_nat", "nginx_transparent_proxy_services": [svc()]}, None),
    # one proxy, several methods: the method chosen per service (issue 14)
    ("unknown-service-method", {"nginx_transparent_proxy_services": [svc(), svc(name="web", protocol="tcp", port=80, method="dsr_magic")]},
     ["Service web", "method \"dsr_magic\"", "must be one of ip_transparency, dsr_router_nat, dsr_origin_nat"], ["Service dns_udp"]),
    ("dsr-method-on-a-tcp-service", {"nginx_transparent_proxy_services": [
        svc(method="dsr_router_nat"), svc(name="dns_tcp", protocol="tcp", method="dsr_router_nat")]},
     ["Service dns_tcp", "(dsr_router_nat)", "protocol tcp", "works for UDP only"], ["Service dns_udp"]),
    ("dsr-method-on-an-http-service", {"nginx_transparent_proxy_services": [
        svc(), svc(name="web", protocol="tcp", port=80, http=True, method="dsr_origin_nat")]},
     ["Service web", "(dsr_origin_nat)", "http: true", "use ip_transparency"]),
    ("methods-share-upstream-and-port", {"nginx_transparent_proxy_services": [
        svc(method="dsr_router_nat", upstreams=["172.16.0.12", "172.16.0.13"]),
        svc(name="dns_alt", port=5353, upstream_port=53, health_check={"type": "dns"})]},
     ["Service dns_udp (dsr_router_nat)", "service dns_alt (ip_transparency)", "udp upstream_port 53 on 172.16.0.12",
      "cannot be told apart"], ["172.16.0.11", "172.16.0.13"]),
    ("good-mixed-1-2a", {"nginx_transparent_proxy_services": [
        svc(name="web", protocol="tcp", port=80, http=True), svc(method="dsr_router_nat"), svc(name="dns_tcp", protocol="tcp")]}, None),
    ("good-mixed-role-dsr-origin", {"nginx_transparent_proxy_method": "dsr_origin_nat", "nginx_transparent_proxy_services": [
        svc(name="web", protocol="tcp", port=80, http=True, method="ip_transparency"), svc()]}, None),
    ("good-mixed-other-upstreams", {"nginx_transparent_proxy_services": [
        svc(method="dsr_router_nat", upstreams=["172.16.0.13"]), svc(name="dns_alt", port=5353, upstream_port=53, health_check={"type": "dns"})]},
     None),
    ("good-ip-transparency", {"nginx_transparent_proxy_services": [svc(), svc(name="web", protocol="tcp", port=80, http=True)]},
     None),
]


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, run_preflight):
    return run_preflight(tmp_path_factory.mktemp("preflight"), os.path.join(HERE, "preflight.yml"), [c[:3] for c in CASES],
                         {"nginx_transparent_proxy_state": "absent"})


@pytest.mark.parametrize("case,parts,not_named", [(c[0], c[2], c[3] if len(c) > 3 else ()) for c in CASES], ids=[c[0] for c in CASES])
def test_refusal_names_the_item_and_the_rule(refusals, assert_refusal, case, parts, not_named):
    assert_refusal(refusals, case, parts, not_named)


# The gate (vars/main.yml __nginx_transparent_proxy_ipv6_methods): one line takes a method's IPv6 away. Role vars
# win over inventory variables, so the gate is narrowed with an extra variable, for one more run of both cases.
GATE_CASES = [
    ("gate-refuses-dsr", {"nginx_transparent_proxy_services": [svc(method="dsr_origin_nat", upstreams=["172.16.0.11", "fd00:16::11"])]},
     ["Service dns_udp has IPv6 upstreams (fd00:16::11)", "dsr_origin_nat does not support IPv6 yet", "IPv6 methods: ip_transparency"]),
    ("gate-passes-ipv4-dsr", {"nginx_transparent_proxy_services": [svc(method="dsr_origin_nat")]}, None),
]


def test_the_ipv6_gate_names_the_service_and_its_method(tmp_path, run_inventory, assert_refusal):
    hosts = dict((case, dict({"nginx_transparent_proxy_state": "absent"}, **variables)) for case, variables, _parts in GATE_CASES)
    refusals = run_inventory(tmp_path, os.path.join(HERE, "preflight.yml"), {"all": {"hosts": hosts}},
                             extra_vars={"__nginx_transparent_proxy_ipv6_methods": ["ip_transparency"]})[0]
    for case, _variables, parts in GATE_CASES:
        assert_refusal(refusals, case, parts)


# The IPv6 host check (issue 16 review, A) needs the host's answers: the task itself, taken from preflight.yml, runs
# here on what the read command prints on a host with RA default routes on two interfaces.
def _preflight_task(name):
    import yaml
    with open(os.path.join(HERE, "..", "..", "..", "..", "roles", "nginx_transparent_proxy", "tasks", "preflight.yml")) as handle:
        return next(task for task in yaml.safe_load(handle) if task.get("name") == name)


RA_LINES = ["lo_disable_ipv6=0", "accept_ra all 1", "accept_ra default 1", "accept_ra eth0 2", "accept_ra eth1 1", "accept_ra eth2 0",
            "route default via fe80::1 dev eth0 proto ra metric 1024 expires 1797sec pref medium",
            "route default via fe80::2 dev eth1 proto ra metric 1024 expires 1797sec pref medium"]
RA_CASES = [
    # router NAT of IPv6 upstreams: eth1's RA route would go at once (eth0 keeps its own: accept_ra 2), whichever is public
    ("ra-route-on-another-interface", "dsr_router_nat", RA_LINES,
     ["Service dns_udp (dsr_router_nat) has IPv6 upstreams", "delete immediately", "interface eth1 (accept_ra 1: default via fe80::2 dev eth1",
      "set net.ipv6.conf.eth1.accept_ra = 2 in /etc/sysctl.d", "static IPv6 default route"], ["interface eth0"]),
    ("ra-routes-kept-with-accept-ra-2", "dsr_router_nat", [line.replace("accept_ra eth1 1", "accept_ra eth1 2") for line in RA_LINES], None, ()),
    # no IPv6 forwarding: nothing to lose
    ("ra-routes-without-router-nat", "dsr_origin_nat", RA_LINES, None, ()),
]


def test_ipv6_router_nat_refuses_ra_default_routes_on_any_interface(tmp_path, run_inventory, assert_refusal):
    task = _preflight_task("Assert the host can serve IPv6 as the methods need")
    task["when"] = []
    playbook = tmp_path / "ra.yml"
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [task]}]))
    hosts = dict((case, {"nginx_transparent_proxy_route_table": 100, "__nginx_transparent_proxy_ipv6_host": {"stdout_lines": lines},
                         "__nginx_transparent_proxy_groups": [{"name": "dns_udp", "group": "dns_udp_v6", "family": 6, "method": method}]})
                 for case, method, lines, _parts, _not in RA_CASES)
    refusals = run_inventory(tmp_path, str(playbook), {"all": {"hosts": hosts}})[0]
    for case, _method, _lines, parts, not_named in RA_CASES:
        assert_refusal(refusals, case, parts, not_named)


# The receive buffer against the kernel's cap (issue 18): the task, taken from preflight.yml, on what the slurp of
# /proc/sys/net/core/rmem_max returns (212992 bytes = 208k, the kernel's default cap).
RMEM_CASES = [
    ("rcvbuf-above-rmem-max", "4m", ["nginx_transparent_proxy_udp_rcvbuf 4m", "(4194304 bytes)", "net.core.rmem_max (212992)",
                                     "raise net.core.rmem_max"]),
    ("rcvbuf-one-k-above", "209k", ["(214016 bytes)", "net.core.rmem_max (212992)"]),
    ("rcvbuf-at-rmem-max", "208k", None),
    ("rcvbuf-in-bytes", "212992", None),
    # the slurp failed (its failure is kept for this assert): refused with the cause, not taken as "no limit"
    ("rmem-max-unreadable", "1m", ["nginx_transparent_proxy_udp_rcvbuf 1m cannot be checked", "file not found",
                                   "before Linux 6.11", "empty nginx_transparent_proxy_udp_rcvbuf"]),
]


def test_a_udp_receive_buffer_above_rmem_max_is_refused(tmp_path, run_inventory, assert_refusal):
    import base64
    task = _preflight_task("Assert the UDP receive buffer fits under net.core.rmem_max")
    task["when"] = []
    playbook = tmp_path / "rmem.yml"
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [task]}]))
    content = base64.b64encode(b"212992\n").decode()
    unreadable = {"failed": True, "msg": "file not found: /proc/sys/net/core/rmem_max"}
    hosts = dict((case, {"nginx_transparent_proxy_udp_rcvbuf": size, "__nginx_transparent_proxy_rmem_max":
                         unreadable if case == "rmem-max-unreadable" else {"content": content}})
                 for case, size, _parts in RMEM_CASES)
    refusals = run_inventory(tmp_path, str(playbook), {"all": {"hosts": hosts}})[0]
    for case, _size, parts in RMEM_CASES:
        assert_refusal(refusals, case, parts)
