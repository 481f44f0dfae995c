"""The role's nginx files, rendered by Ansible (and the checker's includes, by the checker) from the richer
service model, checked by the real `nginx -t` of the lab image (Debian 12's nginx and stream module) in a
throwaway container: what nginx accepts, and that it refuses what the preflight refuses (a `backup` server with
`hash`), so the preflight's rule is nginx's. Skipped when docker or the image netops-ipt-lab is missing, unless
NETOPS_REQUIRE_LAB_IMAGE=1 (`make molecule` sets it after building the image)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from test_templates import DUAL_STACK_SERVICES, RICH, ROOT, render  # same directory (pytest puts it on sys.path)

IMAGE = "netops-ipt-lab"
PROGRAM = os.path.join(ROOT, "roles", "nginx_transparent_proxy", "files", "netops-healthcheck.py")
MAIN = """load_module /usr/lib/nginx/modules/ngx_stream_module.so;
error_log stderr;
events {}
http { include %(d)s/http.conf; }
stream { include %(d)s/stream.conf; }
"""


def _image_available():
    if shutil.which("docker") is None:
        return False
    proc = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False, timeout=60)
    return proc.returncode == 0


pytestmark = pytest.mark.skipif(os.environ.get("NETOPS_REQUIRE_LAB_IMAGE") != "1" and not _image_available(),
                                reason="docker or the lab image %s is missing (make image builds it)" % IMAGE)

UDP = [{"name": "dns_udp", "protocol": "udp", "port": 53, "balance": "random",
        "upstreams": [{"address": "172.16.0.11", "weight": 4, "max_fails": 0}, "172.16.0.12"], "server_extra": ["proxy_connect_timeout 1s"]},
       {"name": "syslog", "protocol": "udp", "port": 514, "balance": "least_conn", "health_check": {"type": "none"},
        "upstreams": ["172.16.0.11", {"address": "172.16.0.13", "backup": True}]}]
DUAL_STACK = [dict((k, v) for k, v in s.items() if k != "listen_address") for s in DUAL_STACK_SERVICES]
# nginx_transparent_proxy_* variables of each case, beside the services; "refused" cases bypass the preflight
CASES = {
    "ip_transparency_checker": {"nginx_transparent_proxy_services": RICH},
    "ip_transparency_inline": {"nginx_transparent_proxy_services": RICH, "nginx_transparent_proxy_health_check": False},
    "dsr_router_nat_checker": {"nginx_transparent_proxy_services": UDP, "nginx_transparent_proxy_method": "dsr_router_nat"},
    "dsr_origin_nat_inline": {"nginx_transparent_proxy_services": UDP, "nginx_transparent_proxy_method": "dsr_origin_nat",
                              "nginx_transparent_proxy_health_check": False},
    # one proxy, several methods (issue 14): HTTP and DNS/TCP by ip_transparency, DNS/UDP by DSR
    "mixed_1_2a_checker": {"nginx_transparent_proxy_services": [RICH[0], dict(RICH[1], method="dsr_router_nat"), RICH[2]]},
    "mixed_1_2b_inline": {"nginx_transparent_proxy_services": [RICH[0], dict(RICH[1], method="dsr_origin_nat"), RICH[2]] + UDP[1:],
                          "nginx_transparent_proxy_health_check": False},
    # IPv4 and IPv6 (issue 16): a listener and an upstream group per family, `[$remote_addr]:$remote_port` for DSR
    # (without the golden case's listen_address: nginx -t binds a given address, which the container does not hold)
    "dual_stack_checker": {"nginx_transparent_proxy_services": DUAL_STACK},
    "dual_stack_inline": {"nginx_transparent_proxy_services": DUAL_STACK, "nginx_transparent_proxy_health_check": False},
    "refused_hash_with_backup": {"nginx_transparent_proxy_health_check": False, "nginx_transparent_proxy_services": [
        {"name": "dns_udp", "protocol": "udp", "port": 53, "balance": "hash", "hash_key": "$remote_addr",
         "upstreams": ["172.16.0.11", {"address": "172.16.0.12", "backup": True}]}]},
    "refused_every_server_backup": {"nginx_transparent_proxy_health_check": False, "nginx_transparent_proxy_services": [
        {"name": "dns_udp", "protocol": "udp", "port": 53, "upstreams": [{"address": "172.16.0.12", "backup": True}]}]},
}


@pytest.fixture(scope="module")
def nginx_t(tmp_path_factory):
    """{case: (exit status, output of nginx -t)}, one container for every case."""
    root = tmp_path_factory.mktemp("nginx")
    for case, variables in CASES.items():
        case_dir = root / case
        case_dir.mkdir()
        inside = "/t/" + case
        variables = dict({"nginx_transparent_proxy_method": "ip_transparency"}, **variables)
        out = render(case_dir, __nginx_transparent_proxy_hc_include_dir=inside + "/upstreams", **variables)
        if variables.get("nginx_transparent_proxy_health_check", True):
            config = json.loads(out["healthcheck.json"])
            config.update(include_dir=str(case_dir / "upstreams"), state_file=str(case_dir / "state.json"))
            (case_dir / "hc.json").write_text(json.dumps(config))
            subprocess.run([sys.executable, PROGRAM, "render", "--config", str(case_dir / "hc.json")], check=True, capture_output=True)
        (case_dir / "nginx.conf").write_text(MAIN % {"d": inside})
    script = 'for d in /t/*/; do c=$(basename "$d"); nginx -t -c "$d/nginx.conf" > "/out/$c.log" 2>&1; echo $? > "/out/$c.rc"; done'
    results = root / "results"
    results.mkdir()
    subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", "%s:/t:ro" % root, "-v", "%s:/out" % results,
                    "--entrypoint", "sh", IMAGE, "-c", script], check=True, capture_output=True, timeout=300)
    return dict((case, (int((results / (case + ".rc")).read_text()), (results / (case + ".log")).read_text())) for case in CASES)


@pytest.mark.parametrize("case", [c for c in CASES if not c.startswith("refused")])
def test_nginx_accepts_the_rendered_configuration(nginx_t, case):
    status, output = nginx_t[case]
    assert status == 0, output


@pytest.mark.parametrize("case,message", [("refused_hash_with_backup", 'balancing method does not support parameter "backup"'),
                                          ("refused_every_server_backup", 'no servers in upstream "netops_dns_udp"')])
def test_nginx_refuses_what_the_preflight_refuses(nginx_t, case, message):
    status, output = nginx_t[case]
    assert status != 0 and message in output, output
