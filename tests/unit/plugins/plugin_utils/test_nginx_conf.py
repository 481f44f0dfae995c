"""Unit tests of the nginx configuration parser (plugins/plugin_utils/_nginx_conf.py)."""

from ansible_collections.netops.ip_transparency.plugins.plugin_utils import _nginx_conf as nginx_conf

from .troubleshoot_fakes import NGINX_CONF


def test_nginx_config_parser_finds_the_server_of_each_service():
    parsed = nginx_conf.parse_nginx(NGINX_CONF)
    fname, server = nginx_conf.find_servers(parsed, {"port": 53, "protocol": "udp"})[0]
    assert fname.endswith("stream.conf") and server.inherited("proxy_responses").args == ["1"]
    assert nginx_conf.find_servers(parsed, {"port": 53, "protocol": "tcp"}) == []
    assert nginx_conf.detect_method({"nginx": {"config": NGINX_CONF}}) == "ip_transparency"


def test_comments_are_stripped_outside_quotes_and_each_file_is_its_own_tree():
    parsed = nginx_conf.parse_nginx("# configuration file /a.conf:\nserver { listen 8053 udp; # x { y\n"
                                    "  return '#not a comment'; location / { proxy_bind $remote_addr transparent; } }\n"
                                    "# configuration file /empty.conf:\n# nothing\n")
    assert [fname for fname, _root in parsed] == ["/a.conf"]
    server = parsed[0][1].directives("server")[0]
    assert [d.args for d in server.directives("return")] == [["#not a comment"]]
    # found in the location inside when neither the server nor an enclosing block has it
    assert nginx_conf.dump_directive(server.inherited("proxy_bind")) == "proxy_bind $remote_addr transparent;"
    assert nginx_conf.dump_directive(server.inherited("proxy_responses")) == "(none)"
    assert nginx_conf.find_servers(parsed, {"port": 8053, "protocol": "udp"})[0][1] is server


def test_detect_method_is_none_without_the_collections_marker():
    assert nginx_conf.detect_method({}) is None
    assert nginx_conf.detect_method({"nginx": {"config": None}}) is None
    assert nginx_conf.detect_method({"nginx": {"config": "# Method: dsr_origin_nat."}}) == "dsr_origin_nat"
    assert nginx_conf.detect_method({"nginx": {"config": "# Method: other."}}) is None


def test_each_server_names_its_service_and_method_and_the_header_every_method():
    from .troubleshoot_fakes import mixed_nginx_conf
    conf = mixed_nginx_conf("dsr_origin_nat")
    parsed = nginx_conf.parse_nginx(conf)
    server = nginx_conf.find_servers(parsed, {"port": 53, "protocol": "udp"})[0][1]
    assert nginx_conf.server_method(server) == ("dns_udp", "dsr_origin_nat")
    assert nginx_conf.server_method(nginx_conf.find_servers(parsed, {"port": 80, "protocol": "tcp"})[0][1]) == ("http", "ip_transparency")
    # the marker is no nginx directive: the rest of the server reads as before
    assert [d.name for d in server.children if not d.name.startswith("#")] == ["listen", "proxy_pass", "proxy_bind", "proxy_responses"]
    assert nginx_conf.detect_methods({"nginx": {"config": conf}}) == ["ip_transparency", "dsr_origin_nat"]
    # several methods: no single method for the proxy
    assert nginx_conf.detect_method({"nginx": {"config": conf}}) is None
    assert nginx_conf.detect_methods({"nginx": {"config": NGINX_CONF}}) == ["ip_transparency"]
    assert nginx_conf.detect_methods({}) == []


def test_a_server_without_the_marker_has_no_method_and_a_bad_marker_is_ignored():
    parsed = nginx_conf.parse_nginx(NGINX_CONF)
    assert nginx_conf.server_method(nginx_conf.find_servers(parsed, {"port": 80, "protocol": "tcp"})[0][1]) is None
    parsed = nginx_conf.parse_nginx("server {\n    # Service x: method other.\n    listen 53 udp;\n}\n")
    assert nginx_conf.server_method(nginx_conf.find_servers(parsed, {"port": 53, "protocol": "udp"})[0][1]) is None
