"""Browser tests of the Cloud Credentials page (issue 10): Debian's chromium driven by Playwright for Python.

``fixtures`` is a pytest plugin (registered in tests/conftest.py): a daemon per test in a loop thread of its
own, one chromium per test module, and a fresh browser context per test that fails on any request to a host
other than the daemon. ``page`` knows the page's accessible names; ``axe`` runs axe-core in it.
"""
