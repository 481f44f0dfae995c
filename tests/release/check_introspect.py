#!/usr/bin/env python
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fail when ansible-builder would put into an execution environment something the controller does not need.

stdin: the YAML of `ansible-builder introspect --sanitize <collections path>`, which lists the
Python and system packages the installed collections declare (ansible-core and the like removed).
An offender is a package the developers' tooling pins (requirements-dev.txt: tests, lint,
Molecule, the lab) or one a module requires on the managed hosts (its documented `requirements`,
from `ansible-doc --json -t module ...`): the modules run there, not in the execution environment.
"""
from __future__ import absolute_import, division, print_function

import json
import re
import sys

import yaml

__metaclass__ = type

NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# a module requirement that names a package: "pyroute2 >= 0.7.2 on the managed host (...)"
PACKAGE_REQUIREMENT = re.compile(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*(?:[<>=!~]=?|$)")


def package_name(line):
    """The normalised name a requirement line starts with ('' for a comment or option)."""
    match = NAME.match(line.split("#", 1)[0])
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: check_introspect.py REQUIREMENTS_DEV MODULE_DOCS_JSON < introspect.yml\n")
        return 2
    with open(argv[1]) as handle:
        dev = set(package_name(line) for line in handle) - {""}
    with open(argv[2]) as handle:
        docs = json.load(handle)
    host = set()
    for module in docs.values():
        host.update(package_name(item) for item in module["doc"].get("requirements", []) if PACKAGE_REQUIREMENT.match(item))
    host.discard("")
    if not dev or not host:
        sys.stderr.write("check_introspect: no developer tooling or no module requirements read\n")
        return 2

    listed = yaml.safe_load(sys.stdin) or {}
    offenders = []
    for kind in ("python", "system"):
        for line in listed.get(kind) or []:
            name = package_name(line)
            if name in host:
                offenders.append("%s: %s (needed on the managed hosts, where the modules run)" % (kind, line))
            elif name in dev:
                offenders.append("%s: %s (developer tooling, requirements-dev.txt)" % (kind, line))
    if offenders:
        sys.stderr.write("ansible-builder introspect lists what the controller does not need:\n")
        sys.stderr.write("".join("  %s\n" % offender for offender in offenders))
        return 1
    print("introspect: %d Python and %d system packages for the execution environment, none of them developer tooling "
          "(%d checked) or host-side (%s)" % (len(listed.get("python") or []), len(listed.get("system") or []),
                                              len(dev), ", ".join(sorted(host))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
