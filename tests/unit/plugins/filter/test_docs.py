"""Every filter the collection exports has its own documentation, as ansible-doc finds it: a sidecar
plugins/filter/<filter>.yml, or DOCUMENTATION in plugins/filter/<filter>.py when the file holds that one filter.
`make collection` proves the same with ansible-doc on the installed copy; this is the quick check."""

import ast
import importlib
import os

import pytest
import yaml

FILTER_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "plugins", "filter"))
FILES = sorted(name[:-3] for name in os.listdir(FILTER_DIR) if name.endswith(".py") and name != "__init__.py")
EXPORTED = sorted((name, filename) for filename in FILES
                  for name in importlib.import_module("ansible_collections.netops.ip_transparency.plugins.filter." + filename)
                  .FilterModule().filters())


def _embedded(filename):
    with open(os.path.join(FILTER_DIR, filename + ".py")) as handle:
        tree = ast.parse(handle.read())
    return dict((node.targets[0].id, ast.literal_eval(node.value)) for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN"))


@pytest.mark.parametrize("name, filename", EXPORTED)
def test_each_filter_has_its_own_documentation(name, filename):
    sidecar = os.path.join(FILTER_DIR, name + ".yml")
    if os.path.exists(sidecar):
        with open(sidecar) as handle:
            docs = yaml.safe_load(handle)
        doc = docs["DOCUMENTATION"]
        assert "DOCUMENTATION" not in _embedded(filename), "%s.py: docs belong in the sidecars of its filters" % filename
    else:
        assert name == filename, "%s (in %s.py) has no plugins/filter/%s.yml" % (name, filename, name)
        docs = _embedded(filename)
        doc = yaml.safe_load(docs["DOCUMENTATION"])
    assert doc["name"] == name
    assert doc["short_description"] and doc["description"] and "_input" in doc["options"]
    assert docs.get("EXAMPLES") and docs.get("RETURN")


def test_no_sidecar_without_its_filter():
    sidecars = sorted(name[:-4] for name in os.listdir(FILTER_DIR) if name.endswith(".yml"))
    assert set(sidecars) <= set(name for name, _f in EXPORTED)
