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


# --- a proxy serving several methods (one per service) ---------------------------------------------------------------

ROUTER, REPLY_TABLE = "172.16.0.253", 200


def mixed_nginx_conf(dns_method):
    """The nginx files of a proxy serving HTTP by IP Transparency and DNS over UDP by ``dns_method``, as the
    nginx_transparent_proxy role renders them: the methods in the header, each server's method as its first line."""
    return """# configuration file /etc/nginx/nginx.conf:
user www-data;
http { include /etc/nginx/conf.d/*.conf; }

# configuration file /etc/nginx/conf.d/netops-transparent-proxy.conf:
# Methods: ip_transparency, %(m)s.
upstream netops_http { server 172.16.0.11:80; server 172.16.0.12:80; }
server {
    # Service http: method ip_transparency.
    listen 80;
    location / { proxy_bind $remote_addr transparent; proxy_pass http://netops_http; }
}

# configuration file /etc/nginx/netops-transparent-proxy/stream.conf:
# Methods: ip_transparency, %(m)s.
server {
    # Service dns_udp: method %(m)s.
    listen 53 udp;
    proxy_pass netops_dns_udp;
    proxy_bind $remote_addr:$remote_port transparent;
    proxy_responses 0;
}
""" % {"m": dns_method}


def mixed_config(dns_method):
    """HTTP by IP Transparency, DNS over UDP by ``dns_method`` (each service's method settled, as the role does)."""
    cfg = config()
    cfg["method"] = "mixed"
    cfg["services"][0]["method"] = "ip_transparency"
    cfg["services"][1].update(method=dns_method, proxy_responses=0)
    return cfg


def mixed_lab(dns_method):
    """The lab as it is once the playbooks put HTTP on Method 1 and DNS on ``dns_method`` (2a or 2b)."""
    hosts = lab()
    proxy = hosts["proxy"]["facts"]
    proxy["nginx"]["config"] = mixed_nginx_conf(dns_method)
    # only the Method 1 service's replies are marked (DSR replies must not be delivered to nginx)
    proxy["nft_ruleset"] = proxy["nft_ruleset"][:1]
    if dns_method == "dsr_router_nat":
        proxy["sysctl"].update(ip_forward="1", udp_early_demux="0")
        proxy["nat"]["eth0"]["nftables"] = [{"src": "172.16.0.8/29", "protocol": "udp", "sport": 53, "nat_to": VIP}]
        return hosts
    # 2b: the upstreams keep their router as default route; only HTTP's replies go via the proxy, by source port
    for name, address in (("upstream1", UPSTREAMS[0]), ("upstream2", UPSTREAMS[1])):
        facts = upstream_facts(address, via=ROUTER)
        facts["rules"] = [
            {"line": "0: from all lookup local", "priority": 0, "fwmark": None, "fwmask": None, "table": 255, "action": "lookup", "selectors": False},
            {"line": "1000: from all ipproto tcp sport 80 lookup %d" % REPLY_TABLE, "priority": 1000, "fwmark": None, "fwmask": None,
             "table": REPLY_TABLE, "action": "lookup", "selectors": True},
            {"line": "32766: from all lookup main", "priority": 32766, "fwmark": None, "fwmask": None, "table": 254, "action": "lookup",
             "selectors": False}]
        facts["routes"][str(REPLY_TABLE)] = [{"type": "unicast", "dest": "0.0.0.0/0", "gateway": "172.16.0.1", "device": "eth0",
                                              "line": "default via 172.16.0.1 dev eth0 table %d" % REPLY_TABLE}]
        facts["nat"]["eth0"]["nftables"] = [{"src": address + "/32", "protocol": "udp", "sport": 53, "nat_to": VIP}]
        facts["act_nat"] = {"available": True, "how": "act_nat module"}
        hosts[name].update(facts=facts, gateway="172.16.0.1", table=str(REPLY_TABLE), rule_priority=1000)
    return hosts


def dns_probe(method, client_port=40016):
    return {"host": "client", "client_address": CLIENT, "client_port": client_port, "port": 53, "upstream_port": 53, "protocol": "udp",
            "kind": "dns", "answered": True, "service": "dns_udp", "method": method}


def dns_capture(method, client_port=40016, t=2.0):
    """A DNS probe's packets on every host, DSR: the client's port on every leg; router NAT rewrites the reply on the
    proxy, origin NAT on the upstream (tcpdump sees a packet after the egress rewrite)."""
    c, up = "%s.%d" % (CLIENT, client_port), "172.16.0.11.53"
    captures = {
        "client": capture((t, "eth0", "Out", c, VIP + ".53", "1+ A? www.example.com. (33)"),
                          (t + 0.004, "eth0", "In", VIP + ".53", c, "1 1/0/0 A 172.16.0.11 (49)")),
        "proxy": capture((t + 0.001, "eth0", "In", c, VIP + ".53", "1+ A? www.example.com. (33)"),
                         (t + 0.0015, "eth1", "Out", c, up, "1+ A? www.example.com. (33)")),
        "upstream1": capture((t + 0.002, "eth0", "In", c, up, "1+ A? www.example.com. (33)"),
                             (t + 0.0025, "eth0", "Out", (VIP + ".53") if method == "dsr_origin_nat" else up, c, "1 1/0/0 A 172.16.0.11 (49)")),
    }
    if method == "dsr_router_nat":
        captures["proxy"] += capture((t + 0.003, "eth1", "In", up, c, "1 1/0/0 A 172.16.0.11 (49)"),
                                     (t + 0.0035, "eth0", "Out", VIP + ".53", c, "1 1/0/0 A 172.16.0.11 (49)"))
    return captures


# --- a dual-stack proxy (issue 16): one nginx server block and upstream group per family ----------------------------

VIP6, CLIENT6 = "2001:db8:99::10", "2001:db8:99::1"
UPSTREAMS6 = ["fd00:16::11", "fd00:16::12"]
PRIVATE6 = "fd00:16::1"


def dual_nginx_conf(dns_method="ip_transparency", bind6=None):
    """`nginx -T` of a dual-stack proxy as the role renders it: HTTP by IP Transparency and DNS over UDP by
    ``dns_method``, each with an IPv4 group (netops_<name>) and an IPv6 group (netops_<name>_v6, `listen [::]:port`),
    the DNS groups' servers in the health checker's include files (which `nginx -T` prints too)."""
    dsr = dns_method != "ip_transparency"
    return """# configuration file /etc/nginx/nginx.conf:
user www-data;
http { include /etc/nginx/conf.d/*.conf; }

# configuration file /etc/nginx/conf.d/netops-transparent-proxy.conf:
# Methods: ip_transparency%(others)s.
upstream netops_http { server 172.16.0.11:80; server 172.16.0.12:80; }
upstream netops_http_v6 { server [fd00:16::11]:80; server [fd00:16::12]:80 max_fails=2; }
server {
    # Service http: method ip_transparency.
    listen 80;
    location / { proxy_bind $remote_addr transparent; proxy_pass http://netops_http; }
}
server {
    # Service http: method ip_transparency.
    listen [::]:80;
    location / { proxy_bind $remote_addr transparent; proxy_pass http://netops_http_v6; }
}

# configuration file /etc/nginx/netops-transparent-proxy/stream.conf:
# Methods: ip_transparency%(others)s.
upstream netops_dns_udp {
    # Membership written by netops-healthcheck.service (active health checks).
    include /etc/nginx/netops-transparent-proxy/upstreams/dns_udp.conf;
}

server {
    # Service dns_udp: method %(m)s.
    listen 53 udp;
    proxy_pass netops_dns_udp;
    proxy_bind %(bind4)s transparent;
    proxy_responses %(responses)d;
}

upstream netops_dns_udp_v6 {
    # Membership written by netops-healthcheck.service (active health checks).
    include /etc/nginx/netops-transparent-proxy/upstreams/dns_udp_v6.conf;
}

server {
    # Service dns_udp: method %(m)s.
    listen [::]:53 udp;
    proxy_pass netops_dns_udp_v6;
    proxy_bind %(bind6)s transparent;
    proxy_responses %(responses)d;
}

# configuration file /etc/nginx/netops-transparent-proxy/upstreams/dns_udp.conf:
server 172.16.0.11:53;
server 172.16.0.12:53;

# configuration file /etc/nginx/netops-transparent-proxy/upstreams/dns_udp_v6.conf:
server [fd00:16::11]:53;
server [fd00:16::12]:53 down;
""" % {"m": dns_method, "others": (", " + dns_method) if dsr else "", "responses": 0 if dsr else 1,
       "bind4": "$remote_addr:$remote_port" if dsr else "$remote_addr",
       "bind6": bind6 or ("[$remote_addr]:$remote_port" if dsr else "$remote_addr")}


def dual_config(dns_method="ip_transparency"):
    """The dual-stack services: every upstream listed by both its addresses (the lab's inventory after issue 16)."""
    cfg = config()
    cfg["method"] = "mixed" if dns_method != "ip_transparency" else "ip_transparency"
    for service in cfg["services"]:
        service["upstreams"] = UPSTREAMS + UPSTREAMS6
    cfg["services"][0]["method"] = "ip_transparency"
    cfg["services"][1].update(method=dns_method, proxy_responses=0 if dns_method != "ip_transparency" else 1)
    cfg.update(public_address6="", client_address6=CLIENT6, client_networks=["192.168.99.0/24", "2001:db8:99::/64"])
    return cfg


def dual_lab(dns_method="ip_transparency"):
    """The lab once the playbooks deploy the dual-stack services: HTTP by Method 1, DNS by ``dns_method``."""
    hosts = mixed_lab(dns_method) if dns_method != "ip_transparency" else lab()
    proxy = hosts["proxy"]["facts"]
    proxy["nginx"]["config"] = dual_nginx_conf(dns_method)
    proxy["addresses"] += [{"interface": "lo", "address": "::1", "prefix": 128, "network": "::1/128"},
                           {"interface": "eth0", "address": VIP6, "prefix": 64, "network": "2001:db8:99::/64"},
                           {"interface": "eth0", "address": "fe80::10", "prefix": 64, "network": "fe80::/64"},
                           {"interface": "eth1", "address": PRIVATE6, "prefix": 64, "network": "fd00:16::/64"}]
    proxy["rules6"] = [{"line": "0: from all lookup local", "priority": 0, "fwmark": None, "fwmask": None, "table": 255, "action": "lookup",
                        "selectors": False},
                       {"line": "100: from all fwmark 0x1 lookup 100", "priority": 100, "fwmark": 1, "fwmask": 0xFFFFFFFF, "table": 100,
                        "action": "lookup", "selectors": False},
                       {"line": "32766: from all lookup main", "priority": 32766, "fwmark": None, "fwmask": None, "table": 254,
                        "action": "lookup", "selectors": False}]
    proxy["routes6"] = {"main": [], "100": [{"type": "local", "dest": "::/0", "device": "lo", "line": "local default dev lo table 100 metric 1024"}]}
    route = {"type": "unicast", "gateway": None, "source": None, "table": 254}
    proxy["route_get"].update([(CLIENT6, dict(route, device="eth0"))] + [(u, dict(route, device="eth1")) for u in UPSTREAMS6])
    proxy["sysctl"]["ipv6_forwarding"] = "1" if dns_method == "dsr_router_nat" else "0"
    # the health checker: one state entry per group, dns_udp_v6 included
    ups = dict(("%s:53" % (a if ":" not in a else "[%s]" % a), {"address": a, "port": 53, "state": "up"}) for a in UPSTREAMS)
    ups6 = dict(("[%s]:53" % a, {"address": a, "port": 53, "state": "up"}) for a in UPSTREAMS6)
    proxy["health"] = {"present": True, "path": "/var/lib/netops-healthcheck/state.json",
                       "state": {"services": {"dns_udp": {"fail_open": False, "upstreams": ups},
                                              "dns_udp_v6": {"fail_open": False, "upstreams": ups6}}, "last_reload_error": ""}}
    marks = ['iifname { "eth1" } ip6 saddr { fd00:16::11, fd00:16::12 } tcp sport 80 meta mark set 0x00000001 comment "http"']
    if dns_method == "ip_transparency":
        marks.append('iifname { "eth1" } ip6 saddr { fd00:16::11, fd00:16::12 } udp sport 53 meta mark set 0x00000001 comment "dns_udp_v6"')
    proxy["nft_ruleset"] = proxy["nft_ruleset"] + marks
    if dns_method == "dsr_router_nat":
        proxy["nat"]["eth0"]["nftables"].append({"src": "fd00:16::/120", "protocol": "udp", "sport": 53, "nat_to": VIP6})
        proxy["nft_ruleset"] += [
            "chain forward {", "type filter hook forward priority filter; policy accept;",
            'iifname { "eth1" } oifname "eth0" ip saddr { 172.16.0.11, 172.16.0.12 } udp sport 53 accept comment "dns_udp"',
            'iifname { "eth1" } oifname "eth0" ip6 saddr { fd00:16::11, fd00:16::12 } udp sport 53 accept comment "dns_udp_v6"',
            'iifname "eth0" oifname { "eth1" } drop', 'iifname { "eth1" } oifname "eth0" drop', "}"]
    for name, address, address6 in (("upstream1", UPSTREAMS[0], UPSTREAMS6[0]), ("upstream2", UPSTREAMS[1], UPSTREAMS6[1])):
        facts = hosts[name]["facts"]
        facts["addresses"] = facts["addresses"] + [{"interface": "eth0", "address": address6, "prefix": 64, "network": "fd00:16::/64"},
                                                   {"interface": "eth0", "address": "fe80::1", "prefix": 64, "network": "fe80::/64"}]
        via6 = "fd00:16::253" if dns_method == "dsr_origin_nat" else PRIVATE6
        facts["route_get"][CLIENT6] = {"type": "unicast", "gateway": via6, "device": "eth0", "source": address6, "table": 254}
        facts["routes6"] = {"main": [{"type": "unicast", "dest": "::/0", "gateway": via6, "device": "eth0",
                                      "line": "default via %s dev eth0 metric 1024" % via6}]}
        if dns_method == "dsr_origin_nat":
            facts["nat"]["eth0"]["nftables"].append({"src": address6 + "/128", "protocol": "udp", "sport": 53, "nat_to": VIP6})
    return hosts
