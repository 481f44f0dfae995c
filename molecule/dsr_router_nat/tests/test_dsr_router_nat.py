"""Method 2a, DSR with router NAT, verified from the client: answers load balanced over the four upstreams
while nginx expects no response, replies forwarded (never delivered to nginx) and rewritten on the proxy,
no loss under sustained load, and no routing from the client network into the private network."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import labcheck  # noqa: E402

testinfra_hosts = ["client"]

PROXY_PRIVATE = "172.16.0.1"
SUSTAINED_RUNS = 25  # x 100 queries = 2,500 queries
COUNTER_TABLE = "netops_verify_dsr"


def proxy():
    return labcheck.lab_host("lb")


def dig_short(host, target, name="www.example.com"):
    return host.run("dig +short +time=2 +tries=1 @%s %s" % (target, name))


def test_nginx_spoofs_client_address_and_port_and_expects_no_responses():
    conf = proxy().check_output("nginx -T 2>/dev/null")
    assert "proxy_bind $remote_addr:$remote_port transparent;" in conf
    assert "proxy_responses 0;" in conf
    assert "proxy_timeout" not in conf, "DSR needs no proxy_timeout health check"
    assert "listen 53 udp;" in conf


def test_upstreams_route_via_the_proxy_and_the_proxy_forwards():
    for name in labcheck.UPSTREAMS:
        route = labcheck.default_route(labcheck.lab_host(name))
        print("%s: %s" % (name, route))
        assert "via %s " % PROXY_PRIVATE in route + " ", "%s does not route via the proxy: %r" % (name, route)
    assert proxy().check_output("sysctl -n net.ipv4.ip_forward") == "1"
    assert proxy().check_output("sysctl -n net.ipv4.udp_early_demux") == "0"


def test_answers_are_balanced_over_all_four_upstreams_and_come_from_the_vip(host):
    answers = []
    for attempt in range(8):  # noqa: B007 pylint: disable=unused-variable
        out = host.check_output("dig +time=2 +tries=1 @%s www.example.com" % labcheck.VIP)
        # dig only accepts a reply from the address it asked; print where it came from anyway.
        assert "SERVER: %s#53" % labcheck.VIP in out, out
        records = [line.split() for line in out.splitlines() if line.startswith("www.example.com.")]
        answer = [fields[-1] for fields in records if len(fields) == 5 and fields[3] == "A"]
        assert len(answer) == 1, "no answer through the proxy:\n%s" % out
        answers.append(answer[0])
    print("answers: %s" % ", ".join(answers))
    assert set(answers) == set(labcheck.UPSTREAMS.values()), "DNS not balanced across all four upstreams"

    labcheck.assert_probe_seen_from_client(host)


def test_replies_are_forwarded_by_the_proxy_never_delivered_to_nginx(host):
    """Counters in a temporary nftables table on the proxy: the upstreams' replies (source port 53) cross its
    forward hook, none reaches its input hook (nginx), and all leave the client side rewritten to the VIP. The
    health checker's probes are answered to the proxy's own private address: those replies are counted apart."""
    p = proxy()
    p.check_output(
        "nft -f - <<'EOF'\n"
        "table inet %s {\n"
        "  counter in_replies {}\n"
        "  counter probe_replies {}\n"
        "  counter fwd_replies {}\n"
        "  chain input { type filter hook input priority -300; ip saddr 172.16.0.0/24 udp sport 53 ip daddr %s counter name probe_replies;\n"
        "                ip saddr 172.16.0.0/24 udp sport 53 ip daddr != %s counter name in_replies; }\n"
        "  chain forward { type filter hook forward priority -300; ip saddr 172.16.0.0/24 udp sport 53 counter name fwd_replies; }\n"
        "}\n"
        "EOF" % (COUNTER_TABLE, PROXY_PRIVATE, PROXY_PRIVATE)
    )
    try:
        queries = 40
        answered = 0
        for attempt in range(queries):  # noqa: B007 pylint: disable=unused-variable
            if dig_short(host, labcheck.VIP).stdout.strip() in labcheck.UPSTREAMS.values():
                answered += 1
        counters = p.check_output("nft list counters table inet %s" % COUNTER_TABLE)
    finally:
        p.run("nft delete table inet %s" % COUNTER_TABLE)
    figures = {}
    for name in ("in_replies", "probe_replies", "fwd_replies"):
        block = counters.split("counter %s" % name, 1)[1]
        figures[name] = int(block.split("packets", 1)[1].split()[0])
    print("%d queries, %d answered; replies forwarded by the proxy: %d, delivered to nginx: %d; health probe replies: %d"
          % (queries, answered, figures["fwd_replies"], figures["in_replies"], figures["probe_replies"]))
    assert answered == queries
    assert figures["in_replies"] == 0, "replies reached the proxy's own sockets (nginx)"
    assert figures["fwd_replies"] >= queries, "the replies did not cross the proxy's forward path"


def test_sustained_load_every_query_is_answered(host):
    figures = labcheck.dnsperf(host, labcheck.VIP, runs=SUSTAINED_RUNS, clients=8, threads=2)
    loss = 100.0 * figures["lost"] / figures["sent"] if figures["sent"] else 100.0
    print("router NAT sustained load: %(sent)d sent, %(completed)d answered, %(lost)d lost" % figures
          + " (%.2f %% loss) at %.0f queries/s over 8 client sockets" % (loss, figures["qps"]))
    assert figures["sent"] >= 2000
    assert figures["lost"] == 0, "DSR lost %d of %d queries:\n%s" % (figures["lost"], figures["sent"], figures["output"])


# The private network, the client's address, the VIP and upstream1's address over each family.
FAMILIES = {
    4: ("172.16.0.0/24", labcheck.CLIENT, labcheck.VIP, labcheck.UPSTREAMS["upstream1"], "ip"),
    6: ("fd00:16::/64", labcheck.CLIENT6, labcheck.VIP6, labcheck.UPSTREAMS6["upstream1"], "ip6"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_proxy_does_not_route_the_client_network_into_the_private_network(host, family):
    """With a route to the private network via the proxy on the client, nothing reaches an upstream, over either
    family. A counter on upstream1 counts every packet from the client's address (the proxy's own health probes
    do not count)."""
    private, client, vip, target, nft_family = FAMILIES[family]
    upstream = labcheck.lab_host("upstream1")
    name = labcheck.unique_name()
    upstream.check_output(
        "nft -f - <<'EOF'\n"
        "table inet %s {\n"
        "  counter from_client {}\n"
        "  chain prerouting { type filter hook prerouting priority -300; %s saddr %s counter name from_client; }\n"
        "}\n"
        "EOF" % (COUNTER_TABLE, nft_family, client)
    )
    host.check_output("ip -%d route add %s via %s" % (family, private, vip))
    try:
        assert "via %s" % vip in host.check_output("ip -%d route get %s" % (family, target))
        dns = host.run("dig -%d +time=1 +tries=2 @%s %s" % (family, target, name))
        ping = host.run("ping -%d -c 3 -W 1 %s" % (family, target))
        http = host.run("curl -%d -sS --max-time 2 http://%s/" % (family, target if family == 4 else "[%s]" % target))
        counters = upstream.check_output("nft list counter inet %s from_client" % COUNTER_TABLE)
    finally:
        host.run("ip -%d route del %s via %s" % (family, private, vip))
        upstream.run("nft delete table inet %s" % COUNTER_TABLE)
    from_client = int(counters.split("packets", 1)[1].split()[0])
    print("client -> %s through the proxy: dig rc=%d, ping rc=%d, curl rc=%d; packets from the client at upstream1: %d"
          % (target, dns.rc, ping.rc, http.rc, from_client))
    assert dns.rc != 0 and ping.rc != 0 and http.rc != 0, "the proxy routed client traffic into the private network"
    assert labcheck.query_sources(name) == {}, "the DNS probe reached an upstream"
    assert from_client == 0, "packets from the client reached upstream1"


def test_only_the_upstreams_service_replies_are_forwarded_and_rewritten(host):
    """Real packets from upstream1 (raw socket, any source) to a port the client listens on, all arriving at the
    proxy: only the UDP datagram from an upstream's address and the service port crosses it, rewritten to the VIP
    (positive control, received by the client's socket); from another port, from a private address that is not
    an upstream, or over TCP from the service port, nothing reaches the client, neither rewritten nor as sent."""
    upstream, src, port = labcheck.lab_host("upstream1"), labcheck.UPSTREAMS["upstream1"], labcheck.probe_port()
    probes = labcheck.dsr_reply_probes(src, port)
    with labcheck.capture({"client": host, "proxy": proxy()}, port) as seen:
        labcheck.send_packets(upstream, probes)
    at_proxy = [r for r in seen["proxy"]["wire"] if r["ifname"] == labcheck.interface_with(proxy(), PROXY_PRIVATE)]
    wire, sock = seen["client"]["wire"], seen["client"]["socket"]
    print("upstream1 -> client port %d: %s" % (port, labcheck.describe(probes)))
    print("proxy (private side) received %d; client received: %s" % (len(at_proxy), labcheck.describe(wire)))
    assert len(at_proxy) == len(probes), "not every probe reached the proxy: %s" % labcheck.describe(at_proxy)
    assert labcheck.matching(sock, src=labcheck.VIP, sport=53, payload="control"), \
        "positive control: the service reply did not reach the client's socket from the VIP: %s" % wire
    unexpected = [r for r in wire if r.get("payload") != "control"]
    assert unexpected == [], "the proxy forwarded packets outside the DSR scope: %s" % labcheck.describe(unexpected)


# --- IPv6 (issue 16): the same service over IPv6, at the same time as IPv4 -----------------------------------------

PROXY_PRIVATE6 = "fd00:16::1"
IPV6_RUNS = 4  # x 100 queries = 400 queries over each family at the same time


def test_ipv6_router_nat_is_set_up_per_family():
    """nginx has an IPv6 listener whose upstream sockets bind [client]:port (without brackets nginx would read the
    port as part of the address); each upstream's IPv6 default route goes via the proxy, which forwards IPv6."""
    conf = proxy().check_output("nginx -T 2>/dev/null")
    assert "listen [::]:53 udp;" in conf
    assert "proxy_bind [$remote_addr]:$remote_port transparent;" in conf
    for name in labcheck.UPSTREAMS6:
        route = labcheck.lab_host(name).check_output("ip -6 route show default")
        assert "via %s " % PROXY_PRIVATE6 in route + " ", "%s does not route IPv6 via the proxy: %r" % (name, route)
    assert proxy().check_output("sysctl -n net.ipv6.conf.all.forwarding") == "1"


def test_ipv6_answers_come_from_the_vip_forwarded_not_delivered_and_nothing_is_lost(host):
    """dig -6 to the IPv6 VIP: balanced over the four upstreams, answered from the VIP, the replies crossing the
    proxy's forward hook and never its input hook; then 400 IPv6 and 400 IPv4 queries at the same time, none lost."""
    p = proxy()
    p.check_output(
        "nft -f - <<'EOF'\n"
        "table inet %s {\n"
        "  counter in_replies {}\n"
        "  counter fwd_replies {}\n"
        "  chain input { type filter hook input priority -300; ip6 saddr fd00:16::/64 udp sport 53 ip6 daddr != %s counter name in_replies; }\n"
        "  chain forward { type filter hook forward priority -300; ip6 saddr fd00:16::/64 udp sport 53 counter name fwd_replies; }\n"
        "}\n"
        "EOF" % (COUNTER_TABLE, PROXY_PRIVATE6)
    )
    try:
        answers = []
        for attempt in range(8):  # noqa: B007 pylint: disable=unused-variable
            out = host.check_output("dig -6 +time=2 +tries=1 @%s www.example.com AAAA" % labcheck.VIP6)
            assert "SERVER: %s#53" % labcheck.VIP6 in out, out
            records = [line.split() for line in out.splitlines() if line.startswith("www.example.com.")]
            answers += [fields[-1] for fields in records if len(fields) == 5 and fields[3] == "AAAA"]
        counters = p.check_output("nft list counters table inet %s" % COUNTER_TABLE)
    finally:
        p.run("nft delete table inet %s" % COUNTER_TABLE)
    figures = {name: int(counters.split("counter %s" % name, 1)[1].split("packets", 1)[1].split()[0])
               for name in ("in_replies", "fwd_replies")}
    print("IPv6 answers: %s; replies forwarded by the proxy: %d, delivered to nginx: %d"
          % (", ".join(answers), figures["fwd_replies"], figures["in_replies"]))
    assert set(answers) == set(labcheck.UPSTREAMS6.values()), "IPv6 DNS not balanced across all four upstreams"
    assert figures["in_replies"] == 0, "IPv6 replies reached the proxy's own sockets (nginx)"
    assert figures["fwd_replies"] >= 8, "the IPv6 replies did not cross the proxy's forward path"
    labcheck.assert_probe_seen_from_client(host, vip=labcheck.VIP6, source=labcheck.CLIENT6)

    v6, v4 = labcheck.dnsperf_together(host, [(labcheck.VIP6, "AAAA"), (labcheck.VIP, "A")], runs=IPV6_RUNS)
    print("IPv6: %(sent)d sent, %(completed)d answered, %(lost)d lost; " % v6
          + "IPv4 at the same time: %(sent)d sent, %(completed)d answered, %(lost)d lost" % v4)
    assert v6["sent"] >= 400 and v6["lost"] == 0, v6["output"]
    assert v4["sent"] >= 400 and v4["lost"] == 0, v4["output"]
