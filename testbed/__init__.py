"""Testbed: an isolated containerd 1.7 with NRI, runc and locally built images.

Install the binaries with `make testbed-deps` (testbed/install.sh); use `testbed.containerd.Testbed`
from Python or `python -m testbed up|down|status|env` from a shell.
"""
