"""Method 2b, DSR with origin NAT, verified from the client: answers load balanced over the four upstreams
while nginx expects no response, the upstreams rewriting their own replies and routing them normally (via the
lab router), no loss under sustained load, and proof that the replies bypass the proxy."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import labcheck  # noqa: E402

testinfra_hosts = ["client"]

PROXY_PRIVATE = "172.16.0.1"
ROUTER_PRIVATE = "172.16.0.253"
SUSTAINED_RUNS = 12  # x 100 queries = 1,200 queries


def proxy():
    return labcheck.lab_host("lb")


def test_nginx_spoofs_client_address_and_port_and_expects_no_responses():
    conf = proxy().check_output("nginx -T 2>/dev/null")
    assert "proxy_bind $remote_addr:$remote_port transparent;" in conf
    assert "proxy_responses 0;" in conf
    assert "proxy_timeout" not in conf, "DSR needs no proxy_timeout health check"


def test_the_proxy_neither_rewrites_nor_is_set_up_to_forward():
    p = proxy()
    tables = p.check_output("nft list tables")
    print("proxy nftables tables:\n%s" % tables)
    assert "netops_nat_" not in tables, "stateless NAT on the proxy"
    for ifname in (labcheck.interface_with(p, labcheck.VIP), labcheck.interface_with(p, PROXY_PRIVATE)):
        assert " nat " not in p.check_output("tc filter show dev %s egress; tc filter show dev %s" % (ifname, ifname))
    assert not p.file("/etc/sysctl.d/61-netops-transparent-proxy.conf").exists, "the role enabled forwarding"


def test_upstreams_rewrite_their_replies_and_route_normally():
    for name, address in labcheck.UPSTREAMS.items():
        upstream = labcheck.lab_host(name)
        route = labcheck.default_route(upstream)
        ifname = labcheck.interface_with(upstream, address)
        table = upstream.check_output("nft list table netdev netops_nat_%s" % ifname)
        print("%s: %s; %s" % (name, route, " ".join(line.strip(" \t,{}") for line in table.splitlines() if " . udp . " in line)))
        assert "via %s " % ROUTER_PRIVATE in route + " ", "%s does not route via the router: %r" % (name, route)
        assert "%s . udp . 53 : %s" % (address, labcheck.VIP) in table


def test_answers_are_balanced_over_all_four_upstreams(host):
    answers = []
    for attempt in range(8):  # noqa: B007 pylint: disable=unused-variable
        out = host.check_output("dig +short +time=2 +tries=1 @%s www.example.com" % labcheck.VIP).strip()
        assert out in labcheck.UPSTREAMS.values(), "no answer through the proxy: %r" % out
        answers.append(out)
    print("answers: %s" % ", ".join(answers))
    assert set(answers) == set(labcheck.UPSTREAMS.values()), "DNS not balanced across all four upstreams"

    labcheck.assert_probe_seen_from_client(host)


def test_sustained_load_is_answered_without_the_replies_passing_the_proxy(host):
    """>= 1,000 queries, none lost; the proxy's private interface receives (almost) nothing meanwhile while
    it sends every query, and the router forwards the replies."""
    p = proxy()
    router = labcheck.lab_host("router")
    p_if = labcheck.interface_with(p, PROXY_PRIVATE)
    r_if = labcheck.interface_with(router, ROUTER_PRIVATE)
    before = {
        "proxy_rx": labcheck.link_counter(p, p_if, "rx_packets"),
        "proxy_tx": labcheck.link_counter(p, p_if, "tx_packets"),
        "router_rx": labcheck.link_counter(router, r_if, "rx_packets"),
    }
    figures = labcheck.dnsperf(host, labcheck.VIP, runs=SUSTAINED_RUNS, clients=8, threads=2)
    delta = {
        "proxy_rx": labcheck.link_counter(p, p_if, "rx_packets") - before["proxy_rx"],
        "proxy_tx": labcheck.link_counter(p, p_if, "tx_packets") - before["proxy_tx"],
        "router_rx": labcheck.link_counter(router, r_if, "rx_packets") - before["router_rx"],
    }
    loss = 100.0 * figures["lost"] / figures["sent"] if figures["sent"] else 100.0
    print("origin NAT sustained load: %(sent)d sent, %(completed)d answered, %(lost)d lost" % figures
          + " (%.2f %% loss) at %.0f queries/s" % (loss, figures["qps"]))
    print("proxy %s (private): rx +%d, tx +%d packets; router %s (private): rx +%d packets"
          % (p_if, delta["proxy_rx"], delta["proxy_tx"], r_if, delta["router_rx"]))
    assert figures["sent"] >= 1000
    assert figures["lost"] == 0, "DSR lost %d of %d queries:\n%s" % (figures["lost"], figures["sent"], figures["output"])
    # The proxy sent every query to the upstreams ...
    assert delta["proxy_tx"] >= figures["completed"]
    # ... and the replies came back through the router, not through the proxy.
    assert delta["router_rx"] >= figures["completed"]
    assert delta["proxy_rx"] < figures["completed"] // 50, "replies passed through the proxy"


def test_only_the_service_replies_leave_the_upstream_rewritten(host):
    """Real packets from upstream1 (raw socket, any source; its normal output path, the origin NAT included) to a
    port the client listens on, through the lab router: the UDP datagram from its address and the service port
    arrives from the VIP (positive control, received by the client's socket); from another port, from a private
    address that is not its own, or over TCP from the service port, each arrives with the source it was sent
    with - the rewrite does not touch them."""
    upstream, src, port = labcheck.lab_host("upstream1"), labcheck.UPSTREAMS["upstream1"], labcheck.probe_port()
    probes = labcheck.dsr_reply_probes(src, port)
    with labcheck.capture({"client": host}, port) as seen:
        labcheck.send_packets(upstream, probes)
    wire, sock = seen["client"]["wire"], seen["client"]["socket"]
    print("upstream1 -> client port %d: %s" % (port, labcheck.describe(probes)))
    print("client received: %s" % labcheck.describe(wire))
    assert labcheck.matching(sock, src=labcheck.VIP, sport=53, payload="control"), \
        "positive control: the service reply did not reach the client's socket from the VIP: %s" % wire
    received = sorted((r["proto"], r["src"], r["sport"]) for r in wire)
    expected = sorted([("udp", labcheck.VIP, 53)] + [(p["proto"], p["src"], p["sport"]) for p in probes[1:]])
    assert received == expected, "rewritten outside the service scope (or lost): got %s" % labcheck.describe(wire)


def test_the_proxy_does_not_forward():
    """Origin NAT needs no forwarding on the proxy (upstream egress is off in the lab): ip_forward stays 0, and no
    client packet reaches the private network through the proxy (positive control via the lab router)."""
    labcheck.assert_client_cannot_reach_private_network_via_proxy()
    assert proxy().check_output("sysctl -n net.ipv4.ip_forward") == "0", "the proxy forwards"


# --- IPv6 (issue 16): each upstream rewrites its IPv6 replies too --------------------------------------------------

ROUTER_PRIVATE6 = "fd00:16::253"
PROXY_PRIVATE6 = "fd00:16::1"
IPV6_RUNS = 4  # x 100 queries = 400 queries over each family at the same time


def test_ipv6_upstreams_rewrite_their_replies_and_route_normally():
    conf = proxy().check_output("nginx -T 2>/dev/null")
    assert "proxy_bind [$remote_addr]:$remote_port transparent;" in conf
    for name, address in labcheck.UPSTREAMS6.items():
        upstream = labcheck.lab_host(name)
        route = upstream.check_output("ip -6 route show default")
        ifname = labcheck.interface_with(upstream, labcheck.UPSTREAMS[name])
        table = upstream.check_output("nft list table netdev netops_nat_%s" % ifname)
        assert "via %s " % ROUTER_PRIVATE6 in route + " ", "%s does not route IPv6 via the router: %r" % (name, route)
        assert "%s . udp . 53 : %s" % (address, labcheck.VIP6) in table, table


def test_ipv6_answers_bypass_the_proxy_and_nothing_is_lost(host):
    """dig -6 to the IPv6 VIP is balanced over the four upstreams and answered from the VIP; 400 IPv6 and 400 IPv4
    queries at the same time lose nothing, and no IPv6 reply from an upstream's DNS reaches the proxy."""
    answers = [labcheck.dig(host, labcheck.VIP6, "www.example.com", "AAAA") for attempt in range(8)]
    print("IPv6 answers: %s" % ", ".join(answers))
    assert set(answers) == set(labcheck.UPSTREAMS6.values()), "IPv6 DNS not balanced across all four upstreams"
    labcheck.assert_probe_seen_from_client(host, vip=labcheck.VIP6, source=labcheck.CLIENT6)

    p = proxy()
    p.check_output(
        "nft -f - <<'EOF'\n"
        "table inet netops_verify_dsr6 {\n"
        "  counter replies {}\n"
        "  chain prerouting { type filter hook prerouting priority -300; ip6 saddr fd00:16::/64 udp sport 53 ip6 daddr != %s counter name replies; }\n"
        "}\n"
        "EOF" % PROXY_PRIVATE6
    )
    try:
        v6, v4 = labcheck.dnsperf_together(host, [(labcheck.VIP6, "AAAA"), (labcheck.VIP, "A")], runs=IPV6_RUNS)
        counters = p.check_output("nft list counter inet netops_verify_dsr6 replies")
    finally:
        p.run("nft delete table inet netops_verify_dsr6")
    at_proxy = int(counters.split("packets", 1)[1].split()[0])
    print("IPv6: %(sent)d sent, %(completed)d answered, %(lost)d lost; " % v6
          + "IPv4 at the same time: %(sent)d sent, %(completed)d answered, %(lost)d lost; " % v4
          + "IPv6 replies seen by the proxy: %d" % at_proxy)
    assert v6["sent"] >= 400 and v6["lost"] == 0, v6["output"]
    assert v4["sent"] >= 400 and v4["lost"] == 0, v4["output"]
    assert at_proxy == 0, "IPv6 replies passed through the proxy"
