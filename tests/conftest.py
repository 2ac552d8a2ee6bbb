"""Shared pytest set-up. Kept minimal: other test modules may add their own fixtures here."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: opens the built HTML book in headless Chromium (needs /usr/bin/chromium)")
