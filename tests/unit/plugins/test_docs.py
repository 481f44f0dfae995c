"""The modules' documentation as ansible-doc renders it: the shared doc fragments are merged in."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MODULES = ["ip_rule", "policy_route", "prerequisites_info", "rp_filter", "tc_nat_filter", "transparency_info"]
NETLINK = ["ip_rule", "policy_route", "tc_nat_filter", "transparency_info"]


@pytest.fixture(scope="module")
def docs():
    ansible_doc = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"), ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    names = ["netops.ip_transparency.%s" % name for name in MODULES]
    proc = subprocess.run([ansible_doc, "-t", "module", "--json"] + names, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return dict((name.split(".")[-1], value["doc"]) for name, value in json.loads(proc.stdout).items())


@pytest.mark.parametrize("name", MODULES)
def test_every_module_has_the_author_and_check_and_diff_mode_attributes(docs, name):
    assert docs[name]["author"] == ["netops maintainers (@netops)"]
    attributes = docs[name]["attributes"]
    assert attributes["check_mode"]["support"] == "full"
    assert attributes["diff_mode"]["support"] == ("none" if name.endswith("_info") else "full")
    assert attributes["diff_mode"]["description"]


@pytest.mark.parametrize("name", NETLINK)
def test_netlink_modules_require_pyroute2_and_say_where_they_act(docs, name):
    assert any(item.startswith("pyroute2 >= 0.7.2") for item in docs[name]["requirements"])
    assert any("network namespace the module runs in" in note for note in docs[name]["notes"])


def test_a_module_keeps_its_own_diff_description(docs):
    assert "ip rule" in docs["ip_rule"]["attributes"]["diff_mode"]["description"]
    assert any("nft" in item for item in docs["tc_nat_filter"]["requirements"])
