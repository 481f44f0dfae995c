"""Unit tests of the module_utils (a package so their basenames may repeat tests/integration's)."""
