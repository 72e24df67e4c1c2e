"""The installer web UI in a real browser (Debian's chromium through Playwright for Python 1.64.1).

Run by appliance/tests/web_ui.rs against concentratord on simulated hardware, with:
UI_URL, UI_INSTALLER / UI_INSTALLER_PASSWORD, UI_READONLY / UI_READONLY_PASSWORD, UI_TOKEN (hex),
UI_ORDER / UI_BAD_ORDER (a signed change-of-tenancy order file for MTR-102, and an altered copy),
UI_CONFIG (the daemon's configuration file), UI_CONCENTRATORD (the binary, for `validate`),
UI_SCREENSHOTS (a directory). Exits non-zero with the failed check on stderr.
"""

import json
import os
import re
import subprocess
import sys
import time

from playwright.sync_api import expect, sync_playwright

URL = os.environ["UI_URL"]
SHOTS = os.environ["UI_SCREENSHOTS"]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
TIMEOUT = 30_000


def shoot(page, name):
    """Screenshots at desktop (1280 px) and phone (360 px) width."""
    for width, height in ((1280, 800), (360, 780)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=os.path.join(SHOTS, f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})


def login(page, name, password):
    page.goto(URL + "/")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def main():
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
        context.set_default_timeout(TIMEOUT)
        page = context.new_page()

        # A wrong password is refused; after a few, even the right one must wait.
        for _ in range(3):
            login(page, os.environ["UI_INSTALLER"], "not-the-password")
            expect(page.locator("#login-error")).to_have_text("wrong name or password")
        shoot(page, "login")
        login(page, os.environ["UI_INSTALLER"], os.environ["UI_INSTALLER_PASSWORD"])
        expect(page.locator("#login-error")).to_contain_text("too many failed logins")
        time.sleep(6)  # the first wait is 5 s
        login(page, os.environ["UI_INSTALLER"], os.environ["UI_INSTALLER_PASSWORD"])
        expect(page.locator("#user")).to_contain_text("(installer)")

        # The overview names the unplugged bus and each dwelling it leaves unread.
        expect(page.locator("#problems")).to_contain_text("Bus rs485-9: its adapter is missing")
        expect(page.locator("#problems")).to_contain_text("D-901")
        expect(page.locator("#live")).to_contain_text("Live")
        shoot(page, "overview")

        expect(page.locator("#facts")).to_contain_text("synchronised by NTP; meter clocks set daily at 03:00")
        # The block balance: the group among the facts, and the tap on it a problem once an interval is judged.
        expect(page.locator("#facts")).to_contain_text("feeder rs485-3/000000000100 and 2 dwelling meters")
        expect(page.locator("#problems")).to_contain_text("Block block-A: from ", timeout=90_000)
        expect(page.locator("#problems")).to_contain_text("unaccounted for")
        expect(page.locator("#problems")).to_contain_text("possible theft or a fault")
        shoot(page, "block-balance")
        page.get_by_role("link", name="Buses & meters").click()
        expect(page.locator("#bus-list")).to_contain_text("A-101")
        # Each meter's clock against the gateway's, in words.
        expect(page.locator("#bus-list td[data-label=Clock]").first).to_have_text(
            re.compile(r"^(on time|\d+ s (ahead of|behind) the gateway)$"))
        shoot(page, "buses")

        # A token applies once, with its receipt; the replay is refused with the reason.
        page.get_by_role("link", name="Accounts").click()
        expect(page.locator("#account-table")).to_contain_text("MTR-101")
        token = os.environ["UI_TOKEN"]
        page.get_by_label("Token (as the customer received it)").fill(token)
        page.get_by_role("button", name="Apply token").click()
        expect(page.locator("#token-result")).to_contain_text("Applied: token 1 for meter MTR-101, 15.00 EUR")
        expect(page.locator("#token-result")).to_contain_text("Receipt")
        expect(page.locator("#account-table")).to_contain_text("15.00 EUR on")
        shoot(page, "token-applied")
        page.get_by_label("Token (as the customer received it)").fill(token)
        page.get_by_role("button", name="Apply token").click()
        expect(page.locator("#token-result")).to_contain_text("refused: token 1 for meter MTR-101 was already applied")
        shoot(page, "token-replayed")

        # A change of tenancy from the utility's signed order file: an altered file is refused with the
        # reason; the signed one closes MTR-102's account with its settlement's figures.
        page.set_input_files("#tenancy-file", os.environ["UI_BAD_ORDER"])
        page.get_by_role("button", name="Apply order").click()
        expect(page.locator("#tenancy-result")).to_contain_text("altered")
        page.set_input_files("#tenancy-file", os.environ["UI_ORDER"])
        page.get_by_role("button", name="Apply order").click()
        expect(page.locator("#tenancy-result")).to_contain_text("meter MTR-102: account 1 of C-0001 closed by order 1 (credit ")
        shoot(page, "tenancy-applied")
        page.set_input_files("#tenancy-file", os.environ["UI_ORDER"])
        page.get_by_role("button", name="Apply order").click()
        expect(page.locator("#tenancy-result")).to_contain_text("carried out before, nothing changed")

        # The relay test goes through the ledger and shows the read-back.
        page.get_by_role("link", name="Relay test").click()
        page.get_by_label("Meter", exact=True).select_option("MTR-101")
        page.get_by_role("button", name="Open (supply off)").click()
        expect(page.locator("#relay-result")).to_contain_text("Meter MTR-101: the relay reads back open.")
        page.get_by_role("link", name="Overview").click()
        expect(page.locator("#problems")).to_contain_text("is cut off: held off by installer")
        page.get_by_role("link", name="Relay test").click()
        shoot(page, "relay-open")
        page.get_by_role("button", name="Close (supply on)").click()
        expect(page.locator("#relay-result")).to_contain_text("Meter MTR-101: the relay reads back closed.")

        # Permit-join pairs the emulated Zigbee meter, shown as it joins.
        page.get_by_role("link", name="Zigbee").click()
        page.get_by_label("Permit joining for (seconds)").fill("60")
        page.get_by_role("button", name="Permit join").click()
        expect(page.locator("#permit-countdown")).to_contain_text("Joining permitted")
        expect(page.locator("#device-table")).to_contain_text("00124b0000000001", timeout=60_000)
        shoot(page, "zigbee")

        page.get_by_role("link", name="Events").click()
        expect(page.locator("#event-list")).to_contain_text("permitted joining")
        expect(page.locator("#log-tail")).to_contain_text("energy-import-total")  # the live log tail
        shoot(page, "events")

        # A read-only user sees everything and can change nothing, in the page or around it.
        ro = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
        ro.set_default_timeout(TIMEOUT)
        rop = ro.new_page()
        login(rop, os.environ["UI_READONLY"], os.environ["UI_READONLY_PASSWORD"])
        expect(rop.locator("#readonly-note")).to_be_visible()
        rop.get_by_role("link", name="Relay test").click()
        expect(rop.get_by_role("button", name="Open (supply off)")).to_be_disabled()
        answer = rop.evaluate("""async () => {
            const me = await (await fetch('/api/me')).json();
            const r = await fetch('/api/relay', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf},
                body: JSON.stringify({meter: 'MTR-101', action: 'open'})});
            return {status: r.status, body: await r.json()};
        }""")
        assert answer["status"] == 403 and "read-only" in answer["body"]["error"], answer
        # Without the CSRF token even the installer is refused.
        answer = page.evaluate("""async () => {
            const r = await fetch('/api/relay', {method: 'POST', headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({meter: 'MTR-101', action: 'open'})});
            return {status: r.status, body: await r.json()};
        }""")
        assert answer["status"] == 403 and "CSRF" in answer["body"]["error"], answer
        ro.close()

        # Commissioning: a scan with live progress, a mistake shown at its field, then a valid file.
        page.get_by_role("link", name="Commissioning").click()
        # A bus on a real port, held by the daemon: the scan borrows it between the polls, and the
        # meter configured there (B-301) keeps being read meanwhile.
        def polls_of_b301():
            return page.evaluate("""() => { const b = state && state.buses && state.buses['rs485-2'];
                const m = b && (b.meters || []).find((m) => m.dwelling === 'B-301');
                return m ? {state: m.state, requests: m.stats.requests} : null; }""")
        before = polls_of_b301()
        assert before is not None, "no meter B-301 on rs485-2 in the state"
        page.get_by_label("Bus to scan").select_option("rs485-2")
        page.get_by_label("Meters to look for").select_option("dlt645")
        page.get_by_role("button", name="Scan").click()
        expect(page.locator("#scan-text")).to_contain_text("Scan of rs485-2 finished: 2 meters found", timeout=120_000)
        expect(page.locator("#scan-live")).to_contain_text("000000000301")
        expect(page.locator("#scan-live")).to_contain_text("000000000302")
        deadline = time.monotonic() + 30
        while True:
            after = polls_of_b301()
            if after and after["state"] == "online" and after["requests"] > before["requests"]:
                break
            assert time.monotonic() < deadline, f"B-301 was not read after the scan: {before} then {after}"
            time.sleep(0.5)
        shoot(page, "commission-scan-real-port")
        page.get_by_label("Meters to look for").select_option("all")
        page.get_by_label("Bus to scan").select_option("rs485-1")
        page.evaluate("""() => { window.scanTexts = [];
            new MutationObserver(() => window.scanTexts.push(document.querySelector('#scan-text').textContent))
              .observe(document.querySelector('#scan-text'), {childList: true, characterData: true, subtree: true}); }""")
        page.get_by_role("button", name="Scan").click()
        expect(page.locator("#scan-text")).to_contain_text("finished: 2 meters found", timeout=120_000)
        texts = page.evaluate("window.scanTexts")
        assert any("addresses tried" in t for t in texts), texts
        # Meters are shown as they are found (not only at the end), and the time left from the start.
        assert any("addresses tried" in t and "2 found so far" in t for t in texts), texts
        assert all(" left." in t for t in texts if "addresses tried" in t), texts
        expect(page.locator("#scan-live li")).to_have_count(2)
        page.get_by_label("Dwelling of 000000000102").fill("")
        page.get_by_role("button", name="Write the configuration and restart").click()
        expect(page.locator("#found-table")).to_contain_text("no dwelling given")
        shoot(page, "commission-error")
        page.get_by_label("Dwelling of 000000000102").fill("A-102 (ground floor)")
        page.get_by_role("button", name="Write the configuration and restart").click()
        expect(page.locator("#map-result")).to_contain_text("the daemon restarts on it now")
        shoot(page, "commission-written")
        config = os.environ["UI_CONFIG"]
        assert 'dwelling = "A-102 (ground floor)"' in open(config).read()
        done = subprocess.run([os.environ["UI_CONCENTRATORD"], "validate", config], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

        # The daemon came back on the new file, and the session with it (kept in the store): the page
        # is still logged in after a reload, with no password asked again.
        deadline = time.monotonic() + 60
        while True:
            try:
                page.goto(URL + "/")
                expect(page.locator("#user")).to_contain_text("(installer)", timeout=5_000)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError("the session did not survive the daemon's restart: the page asks to log in again")
                time.sleep(1)
        assert page.get_by_label("Password").is_hidden()
        page.get_by_role("link", name="Buses & meters").click()
        expect(page.locator("#bus-list")).to_contain_text("A-102 (ground floor)")
        browser.close()
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    main()
