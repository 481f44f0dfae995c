"""Stand-in for the get-pip bootstrap script that ansible-test downloads from a host these
machines cannot reach (`make sanity` puts it where ansible-test caches that script).
ansible-test runs it inside each fresh sanity virtual environment with get-pip's arguments
(`--disable-pip-version-check pip==X [--no-setuptools] [--no-wheel]`): pip comes from Python's
bundled ensurepip, then the requested version from the package index, as get-pip does."""

import ensurepip
import os
import subprocess
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")

saved = dict(os.environ)
ensurepip.bootstrap(upgrade=True)
# ensurepip points PIP_CONFIG_FILE at /dev/null for itself; the index and its CA come from the
# machine's pip configuration, as for any pip run.
os.environ.clear()
os.environ.update(saved)
subprocess.check_call([sys.executable, "-m", "pip", "install"] + [a for a in sys.argv[1:] if a not in GET_PIP_ONLY])
