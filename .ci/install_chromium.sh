#!/usr/bin/env bash
# Debian's Chromium for the browser test (tests/test_serve_browser.py drives it with Playwright through
# executable_path=/usr/bin/chromium; Playwright's own browser downloads are never used). Never fails: where
# Chromium cannot be installed, the browser test skips and says why.
set -u
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "install_chromium: needs root and apt-get (Debian); the browser test will be skipped"
  exit 0
fi
log=$(mktemp -t chromium-install.XXXXXX.log)
if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >"$log" 2>&1; then
  echo "install_chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
else
  echo "install_chromium: apt-get install chromium failed (log: $log); the browser test will be skipped"
  tail -n 5 "$log"
fi
exit 0
