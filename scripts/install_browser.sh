#!/bin/sh
# Headless Chromium for the web page's browser tests (tests/e2e/test_web.py): Debian's
# `chromium` package. Playwright (a dev dependency) drives it; its own browser download is
# not used (no internet here). Needs root and apt; says so and fails otherwise, and the
# browser tests then skip with that reason.
set -e
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: Chromium is missing and this user cannot install it (apt-get as root): the browser tests will skip" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
chromium --version
