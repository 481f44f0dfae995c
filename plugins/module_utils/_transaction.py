# -*- coding: utf-8 -*-
# Copyright: netops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to this collection: not a public API; names and signatures may change in any release.
"""The one transaction engine of the collection's state modules, and its atomic file writer.

A change is applied as steps, each with what undoes it. When a step fails, the steps applied before it are
undone in reverse order and ApplyError says whether everything went back (``rolled_back``). Two ways in:

- ``Transaction().run(description, do, undo)``, one change at a time (the rule and route modules, through
  ``_netlink.UndoLog``);
- ``apply_steps(steps)`` with planned ``Step`` objects (tc_nat_filter, rp_filter).

Only what can be undone belongs in a transaction: a step that cannot be (``systemctl daemon-reload``) runs after
it, so that its failure never undoes a kernel state that is already right.

Nothing here imports Ansible or pyroute2.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import tempfile

from ansible_collections.netops.ip_transparency.plugins.module_utils._common import ApplyError, NetlinkError


class Step(object):
    """One change: ``line`` (readable), ``do()`` and ``undo()`` (None when there is nothing to undo).

    ``partial``: ``do()`` may fail half-way (several writes); its own ``undo()`` then runs as well, so it must
    put back whatever part was applied (by reading the state again, say)."""

    def __init__(self, line, do, undo=None, partial=False):
        self.line = line
        self.do = do
        self.undo = undo
        self.partial = partial


def error_text(exc):
    """Readable text of a step's failure: a netlink error as the errno's text, anything else as it says itself."""
    if isinstance(exc, NetlinkError) or (isinstance(exc, OSError) and not getattr(exc, "filename", None)):
        code = getattr(exc, "code", None)
        if code is None and getattr(exc, "args", None) and isinstance(exc.args[0], int):
            code = exc.args[0]
        if isinstance(code, int) and code > 0:
            return "%s (errno %d)" % (os.strerror(code), code)
    return str(exc)


class Transaction(object):
    """Changes applied so far, each with the callable that reverts it."""

    def __init__(self):
        self.done = []

    def run(self, description, do, undo=None, partial=False):
        """Perform ``do()``; if it raises, undo every earlier change in reverse order and raise ApplyError."""
        try:
            do()
        except Exception as exc:  # pylint: disable=broad-except
            earlier = sum(1 for step in self.done if step[1] is not None)  # what there is to roll back
            if partial and undo is not None:
                self.done.append((description, undo))
            failures = self.rollback()
            if failures:
                raise ApplyError(
                    "%s failed: %s; rolling back the earlier changes also failed: %s" % (description, error_text(exc), "; ".join(failures)),
                    rolled_back=False,
                )
            undone = []
            if partial and undo is not None:
                undone.append("what it had changed")
            if earlier:
                undone.append("%d earlier change(s)" % earlier)
            raise ApplyError(
                "%s failed: %s%s" % (description, error_text(exc), "; %s rolled back" % " and ".join(undone) if undone else ""),
                rolled_back=True,
            )
        self.done.append((description, undo))

    def apply(self, steps):
        for step in steps:
            self.run(step.line, step.do, step.undo, step.partial)

    def rollback(self):
        """Undo what was done; returns the list of undo failures (empty when all went back)."""
        failures = []
        while self.done:
            description, undo = self.done.pop()
            if undo is None:
                continue
            try:
                undo()
            except Exception as exc:  # pylint: disable=broad-except
                failures.append("undo of %s: %s" % (description, error_text(exc)))
        return failures


def apply_steps(steps):
    """Apply ``steps`` in one transaction (see Transaction)."""
    Transaction().apply(steps)


# --- files ---------------------------------------------------------------------------------------------------------


def write_file(path, content, mode=0o644):
    """Make ``path`` hold ``content`` atomically: a temporary file in the same directory renamed over it, so a reader
    (or a reboot) sees the old file or the new one, never a part. The directory is created when missing."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    fd, tmp = tempfile.mkstemp(prefix=".netops-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except Exception:
        remove_file(tmp)
        raise


def remove_file(path):
    """Remove ``path`` (a file or a symbolic link) when it is there."""
    if os.path.islink(path) or os.path.exists(path):
        os.unlink(path)
