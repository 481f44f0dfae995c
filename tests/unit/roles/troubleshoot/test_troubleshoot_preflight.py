"""The troubleshoot role's preflight on the controller (no lab): with the client address given and no probe host
(no troubleshoot_probe_host, no lab_client group), it works out the VIP and the client without asking any host.
ansible-core 2.19 templates `delegate_to` before `when`: an empty probe host name failed the run with
"Empty hostname produced from delegate_to" although the task was to be skipped."""

import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", ".."))

PLAYBOOK = """
- name: Run the troubleshoot role's preflight
  hosts: proxy
  gather_facts: false
  tasks:
    - name: Work out what to check
      ansible.builtin.include_role:
        name: netops.ip_transparency.troubleshoot
        tasks_from: preflight.yml
      vars:
        troubleshoot_client_address: 192.0.2.1
    - name: Show what it worked out
      ansible.builtin.debug:
        msg: "client={{ __troubleshoot_client_address }} vip={{ __troubleshoot_public_address }}"
"""


def test_no_probe_host_with_a_client_address(tmp_path):
    inventory = {"all": {"children": {"proxy": {"hosts": {"proxy-1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "nginx_transparent_proxy_method": "ip_transparency", "nginx_transparent_proxy_public_address": "192.0.2.10",
        "nginx_transparent_proxy_services": [{"name": "dns", "port": 53, "protocol": "udp", "upstreams": ["172.16.0.11"]}],
    }}}}}}
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    (tmp_path / "playbook.yml").write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", LC_ALL="C.UTF-8")
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "inventory.json", "playbook.yml"],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "client=192.0.2.1 vip=192.0.2.10" in proc.stdout, output[-3000:]


def _preflight(tmp_path, services):
    inventory = {"all": {"children": {"proxy": {"hosts": {"proxy-1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "nginx_transparent_proxy_method": "ip_transparency", "nginx_transparent_proxy_public_address": "192.0.2.10",
        "nginx_transparent_proxy_services": services,
    }}}}}}
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    (tmp_path / "playbook.yml").write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", LC_ALL="C.UTF-8")
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "inventory.json", "playbook.yml"],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300, check=False)


def test_a_service_with_an_unknown_method_is_refused_naming_it(tmp_path):
    proc = _preflight(tmp_path, [{"name": "http", "port": 80, "http": True, "upstreams": ["172.16.0.11"], "method": "ip_transparency"},
                                 {"name": "dns", "port": 53, "protocol": "udp", "upstreams": ["172.16.0.11"], "method": "dsr_magic"}])
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, output[-3000:]
    assert "The method of dns must be one of ip_transparency, dsr_router_nat, dsr_origin_nat" in output, output[-3000:]
    assert "The method of http" not in output


def test_services_with_known_methods_or_none_pass_the_preflight(tmp_path):
    proc = _preflight(tmp_path, [{"name": "http", "port": 80, "http": True, "upstreams": ["172.16.0.11"]},
                                 {"name": "dns", "port": 53, "protocol": "udp", "upstreams": ["172.16.0.11"], "method": "dsr_origin_nat"}])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def _dual(tmp_path, **extra):
    """The preflight of a proxy whose service has IPv4 and IPv6 upstreams (issue 16)."""
    inventory = {"all": {"children": {"proxy": {"hosts": {"proxy-1": dict({
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "nginx_transparent_proxy_method": "ip_transparency", "nginx_transparent_proxy_public_address": "192.0.2.10",
        "nginx_transparent_proxy_client_networks": ["192.0.2.0/24", "2001:db8:2::/64"],
        "nginx_transparent_proxy_services": [{"name": "dns", "port": 53, "protocol": "udp", "upstreams": ["172.16.0.11", "fd00:16::11"]}],
    }, **extra)}}}}}
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    (tmp_path / "playbook.yml").write_text(PLAYBOOK.replace("vip={{ __troubleshoot_public_address }}",
                                                            "vip={{ __troubleshoot_public_address }} client6={{ __troubleshoot_client_address6 }}"
                                                            " vip6={{ __troubleshoot_public_address6 }}"))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", LC_ALL="C.UTF-8")
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "inventory.json", "playbook.yml"],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300, check=False)
    return proc, " ".join((proc.stdout + proc.stderr).split())


def test_a_dual_stack_service_gets_an_ipv6_client_and_vip(tmp_path):
    proc, output = _dual(tmp_path, nginx_transparent_proxy_public_address6="2001:db8:2::10")
    assert proc.returncode == 0, output[-3000:]
    assert "client=192.0.2.1 vip=192.0.2.10 client6=2001:db8:2::1 vip6=2001:db8:2::10" in output, output[-3000:]


def test_an_ipv6_vip_in_the_ipv4_variable_is_refused_naming_the_ipv6_one(tmp_path):
    proc, output = _dual(tmp_path, nginx_transparent_proxy_public_address="2001:db8:2::10", nginx_transparent_proxy_public_address6="192.0.2.10")
    assert proc.returncode != 0, output[-3000:]
    assert "(an IPv6 VIP goes in troubleshoot_public_address6)" in output, output[-3000:]
    assert "The IPv6 VIP '192.0.2.10' is not an IPv6 address" in output, output[-3000:]
