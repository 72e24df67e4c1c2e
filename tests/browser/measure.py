"""Measures the installer UI: first page load on loopback (navigation timing, cold browser) and the
daemon's resident memory idle and with one browser attached. Usage:

    target/browser-venv/bin/python tests/browser/measure.py URL NAME PASSWORD DAEMON_PID
"""

import sys
import time

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def main():
    url, name, password, pid = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    idle = rss_kib(pid)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        page = browser.new_context(ignore_https_errors=True).new_page()
        page.goto(url + "/")
        timing = page.evaluate("() => { const t = performance.getEntriesByType('navigation')[0]; return {ttfb: t.responseStart - t.startTime, load: t.loadEventEnd - t.startTime, transfer: t.transferSize}; }")
        page.get_by_label("Name").fill(name)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.locator("#live").filter(has_text="Live").wait_for()
        samples = []
        for _ in range(15):
            time.sleep(1)
            samples.append(rss_kib(pid))
        browser.close()
    print(f"first page load on loopback: {timing['load']:.0f} ms (first byte {timing['ttfb']:.0f} ms)")
    print(f"daemon RSS before the browser: {idle} KiB; with one browser attached: max {max(samples)} KiB, last {samples[-1]} KiB")


if __name__ == "__main__":
    main()
