"""Tiny-model and sample-corpus makers used by the demo and the tests."""
