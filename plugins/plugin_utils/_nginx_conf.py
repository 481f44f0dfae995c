# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""NGINX configuration as the troubleshoot role reads it: ``nginx -T`` output parsed into blocks.

Pure functions, run on the controller: ``parse_nginx`` (the files of ``nginx -T`` as trees of
directives), ``find_servers`` (the server blocks of a service), ``server_method`` (the service and method
a server block of the collection's files names), ``detect_method`` / ``detect_methods`` (the method(s) the
collection's nginx files name in their header). Used by _checks; no import of the other troubleshoot modules.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

TOKEN = re.compile(r"""'[^']*'|"[^"]*"|[{};]|[^\s{};]+""")
METHODS = ("ip_transparency", "dsr_router_nat", "dsr_origin_nat")
_METHOD = "(%s)" % "|".join(METHODS)
# The first line of each server block the nginx_transparent_proxy role renders: `# Service <name>: method <method>.`
SERVICE_MARKER = re.compile(r"^\s*# Service (\S+): method %s\.\s*$" % _METHOD)
# It is kept in the tree as this pseudo-directive (no nginx directive starts with '#').
SERVICE_DIRECTIVE = "#service"


class Block(object):
    def __init__(self, name, args, parent=None):
        self.name = name
        self.args = args
        self.parent = parent
        self.children = []

    def directives(self, name):
        return [child for child in self.children if child.name == name]

    def walk(self):
        for child in self.children:
            yield child
            yield from child.walk()

    def inherited(self, name):
        """The directive ``name`` here, else in the nearest enclosing block, else in the blocks inside (locations)."""
        node = self
        while node is not None:
            found = node.directives(name)
            if found:
                return found[-1]
            node = node.parent
        for child in self.walk():
            if child.name == name:
                return child
        return None


def _strip_comment(line):
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#":
            return line[:index]
    return line


def parse_nginx(text):
    """``nginx -T`` output -> list of (file name, root Block). Includes are not nested by nginx -T."""
    files, name, lines = [], "(nginx -T)", []
    for line in (text or "").splitlines():
        match = re.match(r"^# configuration file (.+):$", line)
        if match:
            files.append((name, lines))
            name, lines = match.group(1), []
        else:
            marker = SERVICE_MARKER.match(line)
            lines.append("%s %s %s;" % (SERVICE_DIRECTIVE, marker.group(1), marker.group(2)) if marker else _strip_comment(line))
    files.append((name, lines))
    result = []
    for fname, flines in files:
        root = Block("main", [])
        node, words = root, []
        for token in TOKEN.findall("\n".join(flines)):
            if token == "{":
                child = Block(words[0] if words else "", words[1:], node)
                node.children.append(child)
                node, words = child, []
            elif token == "}":
                node, words = (node.parent or root), []
            elif token == ";":
                if words:
                    node.children.append(Block(words[0], words[1:], node))
                words = []
            else:
                words.append(token.strip("'\""))
        if root.children:
            result.append((fname, root))
    return result


def _listen_port(args):
    if not args:
        return None
    text = args[0]
    port = text.rsplit(":", 1)[-1] if ":" in text else text
    return int(port) if port.isdigit() else None


def find_servers(parsed, service):
    """Server blocks listening on the service's port (and udp for UDP services)."""
    found = []
    for fname, root in parsed:
        for block in root.walk():
            if block.name != "server" or not block.children:
                continue
            for listen in block.directives("listen"):
                if _listen_port(listen.args) == service["port"] and (("udp" in listen.args) == (service["protocol"] == "udp")):
                    found.append((fname, block))
                    break
    return found


def dump_directive(directive):
    """A directive as nginx writes it, for evidence lines."""
    return "%s %s;" % (directive.name, " ".join(directive.args)) if directive is not None else "(none)"


def server_method(server):
    """(service name, method) a server block's ``# Service <name>: method <method>.`` line names, or None."""
    found = server.directives(SERVICE_DIRECTIVE)
    return (found[0].args[0], found[0].args[1]) if found and len(found[0].args) == 2 else None


def _config(facts):
    return (facts.get("nginx") or {}).get("config") or ""


def detect_methods(facts):
    """Every method the headers of the collection's nginx files on the proxy name (``# Method: X.`` or
    ``# Methods: X, Y.``), in the order of METHODS; [] when none."""
    named = set()
    for match in re.finditer(r"^#.*?\bMethods?: (%s(?:, %s)*)\." % (_METHOD, _METHOD), _config(facts), re.M):
        named.update(m.strip() for m in match.group(1).split(","))
    return [m for m in METHODS if m in named]


def detect_method(facts):
    """The one method named in the collection's nginx files on the proxy (``# Method: X.``), or None (none named,
    or several: then each service's server block names its own)."""
    methods = detect_methods(facts)
    return methods[0] if len(methods) == 1 else None
