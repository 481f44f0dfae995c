"""Shared inputs of the troubleshoot tests: snapshots shaped like transparency_info's answers in the lab,
an `nginx -T` dump, health checker states and tcpdump lines as tcpdump 4.99 prints them."""

VIP, CLIENT = "192.168.99.10", "192.168.99.1"
UPSTREAMS = ["172.16.0.11", "172.16.0.12"]

NGINX_CONF = """# configuration file /etc/nginx/nginx.conf:
user www-data;
http { include /etc/nginx/conf.d/*.conf; }

# configuration file /etc/nginx/conf.d/netops-transparent-proxy.conf:
# Method: ip_transparency.
upstream netops_http { server 172.16.0.11:80; server 172.16.0.12:80; }
server {
    listen 80;
    location / { proxy_bind $remote_addr transparent; proxy_pass http://netops_http; }
}

# configuration file /etc/nginx/netops-transparent-proxy/stream.conf:
server {
    listen 53 udp;
    proxy_pass netops_dns_udp;
    proxy_bind $remote_addr transparent;  # a comment { with braces }
    proxy_responses 1;
}
"""


def config(method="ip_transparency"):
    services = [{"name": "http", "protocol": "tcp", "port": 80, "upstream_port": 80, "http": True, "upstreams": UPSTREAMS, "proxy_responses": 1},
                {"name": "dns_udp", "protocol": "udp", "port": 53, "upstream_port": 53, "http": False, "upstreams": UPSTREAMS, "proxy_responses": 1}]
    if method != "ip_transparency":
        services = services[1:]
    return {"method": method, "public_address": VIP, "client_address": CLIENT, "client_networks": ["192.168.99.0/24"],
            "fwmark": 1, "route_table": 100, "rule_priority": 100, "upstream_egress": False, "services": services, "proxy_host": "proxy",
            "upstream_hosts": {"upstream1": UPSTREAMS[0], "upstream2": UPSTREAMS[1]}}


def rp(**values):
    out = {"all": {"configured": "off", "effective": "off"}}
    for iface, value in values.items():
        out[iface] = {"configured": value, "effective": value}
    return out


def proxy_facts():
    route = {"type": "unicast", "gateway": None, "source": None, "table": 254}
    return {
        "kernel": "6.1.0-56-amd64",
        "addresses": [{"interface": "lo", "address": "127.0.0.1", "prefix": 8, "network": "127.0.0.0/8"},
                      {"interface": "eth0", "address": VIP, "prefix": 24, "network": "192.168.99.0/24"},
                      {"interface": "eth1", "address": "172.16.0.1", "prefix": 24, "network": "172.16.0.0/24"}],
        "rules": [{"line": "0: from all lookup local", "priority": 0, "fwmark": None, "fwmask": None, "table": 255, "action": "lookup", "selectors": False},
                  {"line": "100: from all fwmark 0x1 lookup 100", "priority": 100, "fwmark": 1, "fwmask": 0xFFFFFFFF, "table": 100,
                   "action": "lookup", "selectors": False},
                  {"line": "32766: from all lookup main", "priority": 32766, "fwmark": None, "fwmask": None, "table": 254, "action": "lookup",
                   "selectors": False}],
        "routes": {"main": [], "100": [{"type": "local", "dest": "0.0.0.0/0", "device": "lo", "line": "local default dev lo table 100 scope host"}]},
        "route_get": dict([(CLIENT, dict(route, device="eth0"))] + [(u, dict(route, device="eth1")) for u in UPSTREAMS]),
        "sysctl": {"ip_forward": "0", "udp_early_demux": "1", "rp_filter": rp(eth0="strict", eth1="strict")},
        "nat": {"eth0": {"tc": [], "nftables": []}, "eth1": {"tc": [], "nftables": []}},
        "act_nat": {"available": True, "how": "act_nat module"},
        "nft_ruleset": ['iifname "eth1" ip saddr { 172.16.0.11, 172.16.0.12 } tcp sport 80 meta mark set 0x00000001 comment "http"',
                        'iifname "eth1" ip saddr { 172.16.0.11, 172.16.0.12 } udp sport 53 meta mark set 0x00000001 comment "dns_udp"'],
        "nginx": {"rc": 0, "config": NGINX_CONF, "test": [], "error_log": [],
                  "processes": [{"pid": 10, "role": "master", "uid": 0, "net_raw": True, "cmdline": "nginx: master process"},
                                {"pid": 11, "role": "worker", "uid": 33, "net_raw": True, "cmdline": "nginx: worker process"}]},
    }


def upstream_facts(address, via="172.16.0.1"):
    return {"kernel": "6.1.0-56-amd64",
            "addresses": [{"interface": "eth0", "address": address, "prefix": 24, "network": "172.16.0.0/24"}],
            "routes": {"main": [{"line": "default via %s dev eth0 table main" % via}]},
            "route_get": {CLIENT: {"type": "unicast", "gateway": via, "device": "eth0", "source": address, "table": 254}},
            "sysctl": {"ip_forward": "0", "rp_filter": rp(eth0="strict")}, "nat": {"eth0": {"tc": [], "nftables": []}},
            "act_nat": {"available": False, "how": "no act_nat"}}


def lab():
    return {"proxy": {"group": "proxy", "facts": proxy_facts(), "gateway": ""},
            "upstream1": {"group": "upstream", "facts": upstream_facts(UPSTREAMS[0]), "gateway": "172.16.0.1"},
            "upstream2": {"group": "upstream", "facts": upstream_facts(UPSTREAMS[1]), "gateway": ""}}


def problems(findings):
    return [(f["host"], f["check"]) for f in findings if f["severity"] != "ok"]


def capture(*events):
    return ["%.6f %s %s IP %s > %s: %s" % event for event in events]


def probe():
    return {"host": "client", "client_address": CLIENT, "client_port": 40000, "port": 80, "upstream_port": 80, "protocol": "tcp", "kind": "http",
            "answered": True}


HEALTHY = {
    "client": capture((1.000, "eth0", "Out", CLIENT + ".40000", VIP + ".80", "Flags [S], seq 1"),
                      (1.0012, "eth0", "In", VIP + ".80", CLIENT + ".40000", "Flags [S.], seq 2, length 0"),
                      (1.004, "eth0", "In", VIP + ".80", CLIENT + ".40000", "Flags [P.], seq 1:241, length 240")),
    "proxy": capture((1.001, "eth0", "In", CLIENT + ".40000", VIP + ".80", "Flags [S], seq 1"),
                     (1.0015, "eth1", "Out", CLIENT + ".51000", "172.16.0.12.80", "Flags [S], seq 9"),
                     (1.0025, "eth1", "In", "172.16.0.12.80", CLIENT + ".51000", "Flags [S.], seq 8"),
                     (1.0011, "eth0", "Out", VIP + ".80", CLIENT + ".40000", "Flags [S.], seq 2, length 0"),
                     (1.003, "eth0", "Out", VIP + ".80", CLIENT + ".40000", "Flags [P.], seq 1:241, length 240")),
    "upstream2": capture((1.002, "eth0", "In", CLIENT + ".51000", "172.16.0.12.80", "Flags [S], seq 9"),
                         (1.0021, "eth0", "Out", "172.16.0.12.80", CLIENT + ".51000", "Flags [S.], seq 8")),
}


def health_state(**states):
    """A health checker state file with the given upstream -> state of service dns_udp."""
    ups = dict(("%s:53" % a, {"address": a, "port": 53, "state": states.get(a, "up"), "since": "2026-12-03T20:00:00Z",
                              "reason": "timeout after 0.5s" if states.get(a) == "down" else "", "last_error": "timeout",
                              "ok": 0, "fail": 2}) for a in UPSTREAMS)
    return {"present": True, "path": "/var/lib/netops-healthcheck/state.json",
            "state": {"services": {"dns_udp": {"fail_open": all(u["state"] == "down" for u in ups.values()), "upstreams": ups}},
                      "last_reload_error": ""}}
