"""Method 1 verified from the client: the article's expected results."""

import sys
import os

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import labcheck  # noqa: E402

testinfra_hosts = ["client"]


def assert_http_balanced_and_sees(host, curl_args, client, upstreams):
    """8 requests, ``curl <curl_args>``: every upstream answers, each saw ``client`` as the source, on its own
    address, port 80."""
    replies = [labcheck.parse_hello(host.check_output("curl -sS --max-time 5 %s" % curl_args)) for attempt in range(8)]
    for reply in replies:
        print("Hello from {name}. You connected from {src}:{sport} to {dst}:{dport}".format(**reply))
    assert {r["name"] for r in replies} == set(upstreams), "%s not balanced across all four upstreams" % curl_args
    for reply in replies:
        assert reply["src"] == client, "upstream saw %s, not the client %s" % (reply["src"], client)
        assert reply["dst"] == upstreams[reply["name"]]
        assert reply["dport"] == "80"


def test_http_answers_come_from_every_upstream_and_see_the_client(host):
    assert_http_balanced_and_sees(host, "http://%s/" % labcheck.VIP, labcheck.CLIENT, labcheck.UPSTREAMS)


def test_udp_service_is_answered_and_upstreams_see_the_client(host):
    answers = set()
    for attempt in range(8):  # noqa: B007 pylint: disable=unused-variable
        out = host.check_output("dig +short +time=2 +tries=1 @%s www.example.com" % labcheck.VIP)
        assert out.strip() in labcheck.UPSTREAMS.values(), "no answer through the proxy: %r" % out
        answers.add(out.strip())
    assert answers == set(labcheck.UPSTREAMS.values()), "DNS not balanced across all four upstreams"

    labcheck.assert_probe_seen_from_client(host)


def test_proxy_workers_are_not_root_and_hold_only_cap_net_raw():
    labcheck.assert_workers_least_privilege()


def test_only_the_upstreams_service_replies_are_marked_and_delivered_on_the_proxy(host):
    """Real packets from upstream1 (raw socket, any source) to a client address and port, all arriving at the
    proxy: the replies from an upstream's address and a service port (UDP 53, TCP 80) are marked and delivered to
    the proxy's own sockets, where nginx's transparent upstream sockets take them (positive control); from another
    port, from a private address that is not an upstream, nothing is delivered on the proxy, nor forwarded to the
    client."""
    proxy, upstream = labcheck.lab_host("lb"), labcheck.lab_host("upstream1")
    src, port = labcheck.UPSTREAMS["upstream1"], labcheck.probe_port()
    controls = [labcheck.packet("udp", src, 53, labcheck.CLIENT, port, "control"),
                labcheck.packet("tcp", src, 80, labcheck.CLIENT, port)]
    probes = controls + [
        labcheck.packet("udp", src, 5353, labcheck.CLIENT, port, "udp-5353"),
        labcheck.packet("udp", src, 9999, labcheck.CLIENT, port, "udp-9999"),
        labcheck.packet("tcp", src, 8080, labcheck.CLIENT, port),
        labcheck.packet("udp", labcheck.NOT_AN_UPSTREAM, 53, labcheck.CLIENT, port, "not-an-upstream"),
        labcheck.packet("tcp", labcheck.NOT_AN_UPSTREAM, 80, labcheck.CLIENT, port),
    ]
    with labcheck.capture({"client": host, "proxy": proxy}, port) as seen:
        labcheck.send_packets(upstream, probes)
    private_if = labcheck.interface_with(proxy, labcheck.PROXY_PRIVATE)
    arrived = [r for r in seen["proxy"]["wire"] if r["ifname"] == private_if]
    local, sock = seen["proxy"]["local"], seen["proxy"]["socket"]
    print("upstream1 -> client port %d: %s" % (port, labcheck.describe(probes)))
    print("proxy: %d arrived on %s, delivered locally: %s; client received: %s"
          % (len(arrived), private_if, labcheck.describe(local), labcheck.describe(seen["client"]["wire"])))
    assert len(arrived) == len(probes), "not every probe reached the proxy: %s" % labcheck.describe(arrived)
    delivered = sorted((r["proto"], r["src"], r["sport"]) for r in local)
    assert labcheck.matching(sock, src=src, sport=53, payload="control"), \
        "positive control: the service reply did not reach a socket on the proxy: %s" % labcheck.describe(local)
    assert delivered == sorted((p["proto"], p["src"], p["sport"]) for p in controls), \
        "the proxy marked and delivered packets outside the service scope: %s" % labcheck.describe(local)
    assert seen["client"]["wire"] == [], "the proxy forwarded upstream packets to the client: %s" \
        % labcheck.describe(seen["client"]["wire"])


def test_the_proxy_does_not_forward():
    """Method 1 needs no forwarding (upstream egress is off in the lab): ip_forward stays 0, and no client packet
    reaches the private network through the proxy (positive control via the lab router)."""
    labcheck.assert_client_cannot_reach_private_network_via_proxy()
    assert labcheck.lab_host("lb").check_output("sysctl -n net.ipv4.ip_forward") == "0", "the proxy forwards"


def test_ipv6_client_is_seen_by_every_upstream_while_ipv4_keeps_working(host):
    """The same service over IPv6 (issue 16): curl -6 and dig -6 to the IPv6 VIP reach all four upstreams, which see
    the client's own IPv6 address; 400 DNS queries over each family at the same time lose nothing."""
    assert_http_balanced_and_sees(host, "-6 http://[%s]/" % labcheck.VIP6, labcheck.CLIENT6, labcheck.UPSTREAMS6)

    answers = {labcheck.dig(host, labcheck.VIP6, "www.example.com", "AAAA") for attempt in range(8)}
    assert answers == set(labcheck.UPSTREAMS6.values()), "IPv6 DNS not balanced across all four upstreams: %s" % answers
    labcheck.assert_probe_seen_from_client(host, vip=labcheck.VIP6, source=labcheck.CLIENT6)

    v6, v4 = labcheck.dnsperf_together(host, [(labcheck.VIP6, "AAAA"), (labcheck.VIP, "A")], runs=4)
    print("IPv6: %(completed)d of %(sent)d answered, %(lost)d lost; IPv4 at the same time: " % v6
          + "%(completed)d of %(sent)d answered, %(lost)d lost" % v4)
    assert v6["sent"] >= 400 and v6["lost"] == 0, v6["output"]
    assert v4["sent"] >= 400 and v4["lost"] == 0, v4["output"]


def test_ipv6_return_traffic_is_marked_and_delivered_locally():
    """Method 1's kernel state for IPv6 on the proxy: the fwmark rule and `local ::/0` in its table; no forwarding."""
    proxy = labcheck.lab_host("lb")
    assert "fwmark 0x1 lookup 100" in proxy.check_output("ip -6 rule show"), "no IPv6 fwmark rule on the proxy"
    assert "local default dev lo" in proxy.check_output("ip -6 route show table 100"), "no IPv6 local route in table 100"
    assert proxy.check_output("sysctl -n net.ipv6.conf.all.forwarding") == "0", "the proxy forwards IPv6"
