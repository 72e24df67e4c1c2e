#!/usr/bin/env python3
"""The customer's web app in a phone-sized Chromium (Playwright 1.64.1, Debian's chromium).

Run by headend/tests/phone_web.rs (`the_app_in_a_phone_sized_browser`), which starts the head-end's web
app with a simulated gateway and passes APP_URL, AUTH_CODE, VECTORS and SCREENSHOTS. The script asks
the simulated gateway for events by printing `ORDER ...` lines and reading `OK` back.
"""
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zoneinfo

from playwright.sync_api import sync_playwright, expect

URL = os.environ["APP_URL"]
CODE = os.environ["AUTH_CODE"]
SHOTS = os.environ["SCREENSHOTS"]
VECTORS = os.environ["VECTORS"]
TZ = "Asia/Kolkata"
PASSWORD = "correct horse battery"
passed, failed = [], []


def order(*words):
    print("ORDER", *words, flush=True)
    answer = sys.stdin.readline().strip()
    if answer != "OK":
        raise RuntimeError(f"the simulated gateway did not take the order {words}: {answer!r}")



def wait_until(page, expression, timeout=30000):
    """Polls `expression` in the page until it is true. Not wait_for_function: that evaluates a string
    in the page, which the app's Content-Security-Policy (no 'unsafe-eval') refuses whenever the
    page has committed first."""
    deadline = time.monotonic() + timeout / 1000
    while True:
        if page.evaluate(f"() => Boolean({expression})"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} ms waiting for {expression}")
        time.sleep(0.05)

def step(name):
    def wrap(fn):
        def run(*a):
            t0 = time.monotonic()
            try:
                fn(*a)
            except Exception as e:  # the report names the step and what was seen
                failed.append(name)
                print(f"FAIL {name}: {e}", flush=True)
                raise
            passed.append(name)
            print(f"PASS {name} ({time.monotonic() - t0:.1f} s)", flush=True)
        return run
    return wrap


def shot(page, name):
    """A full-page screenshot at the phone's pixel density, and a small one at CSS pixels (docs/img)."""
    page.screenshot(path=os.path.join(SHOTS, name), full_page=True)
    os.makedirs(os.path.join(SHOTS, "small"), exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, "small", name), full_page=False, scale="css")


@step("first load over loopback, transferred bytes")
def first_load(page, metrics):
    page.goto(URL)
    wait_until(page, "window.__app && window.__app.started === true")
    nav = page.evaluate("""() => {
        const n = performance.getEntriesByType('navigation')[0];
        const r = performance.getEntriesByType('resource');
        return {load_ms: n.loadEventEnd - n.startTime, dom_ms: n.domContentLoadedEventEnd - n.startTime,
                bytes: n.transferSize + r.reduce((s, x) => s + x.transferSize, 0), files: 1 + r.length};
    }""")
    metrics.update(first_load_ms=round(nav["load_ms"], 1), first_load_bytes=nav["bytes"], first_load_files=nav["files"])
    assert nav["bytes"] > 0, nav


@step("Milenage f1-f5 in the browser against the official vectors")
def milenage(page):
    vectors = json.load(open(VECTORS))["vectors"]["milenage"]
    bad = page.evaluate("""async (vectors) => {
        const { Milenage, hex, unhex } = await import('/milenage.js');
        const bad = [];
        for (const v of vectors) {
            const m = await Milenage.withOp(unhex(v.K), unhex(v.OP));
            const f = await m.f2345(unhex(v.RAND));
            const [a, s] = await m.f1(unhex(v.RAND), unhex(v.SQN), unhex(v.AMF));
            const got = {OPc: hex(m.opc), f1: hex(a), f1star: hex(s), f2: hex(f.res), f3: hex(f.ck),
                         f4: hex(f.ik), f5: hex(f.ak), f5star: hex(f.akStar)};
            for (const k in got) if (v[k] && v[k].toLowerCase() !== got[k]) bad.push(`${v.name} ${k}: ${got[k]} != ${v[k]}`);
        }
        return bad;
    }""", vectors)
    assert len(vectors) >= 6, "too few vectors"
    assert not bad, bad


@step("register with the authorization code, logged in")
def register(page):
    page.get_by_text("First time on this phone? Register").click()
    page.fill("#reg-code", CODE)
    page.fill("#reg-user", "ada")
    page.fill("#reg-password", PASSWORD)
    page.get_by_role("button", name="Register this phone").click()
    expect(page.locator("#who")).to_have_text("Logged in as ada", timeout=20000)
    expect(page.locator("#meters")).to_contain_text("MTR-1")
    # K and OPc are kept wrapped, never in the clear.
    kept = page.evaluate("""async () => { const s = await import('/store.js'); const p = await s.get('profile:ada');
        return {keys: Object.keys(p).sort(), wrapped: p.wrapped.length}; }""")
    assert "k" not in kept["keys"] and "opc" not in kept["keys"] and kept["wrapped"] == 48, kept
    expect(page.locator("#meters")).to_contain_text("5,00\u00a0€")
    shot(page, "meters.png")


@step("a low-credit alert arrives while the app is open")
def low_credit(page):
    order("low_credit", "150")
    expect(page.locator("#alerts")).to_contain_text("Low credit on meter MTR-1: 1,50\u00a0€", timeout=5000)


@step("top up a cut meter: double tap buys once, paid to applied, power back on")
def top_up(page, metrics):
    order("cut")
    expect(page.locator("#meters")).to_contain_text("Power cut off", timeout=5000)
    shot(page, "cut-off.png")
    page.get_by_role("button", name="Top up").click()
    page.fill("#topup-amount", "5,00")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#confirm-text")).to_have_text("Pay 5,00\u00a0€ for meter MTR-1?")
    page.locator("#pay").dblclick()
    expect(page.locator('#progress li[data-step="applied"]')).to_have_class(re.compile("done"), timeout=10000)
    metrics["pay_to_applied_ms"] = round(page.evaluate("window.__payToAppliedMs"), 1)
    shot(page, "topup-applied.png")
    n = page.evaluate("""() => fetch('/api/purchases', {headers: {Authorization: 'Bearer ' + window.__app.session.token}})
        .then((r) => r.json()).then((l) => l.length)""")
    assert n == 1, f"{n} purchases after a double tap"
    # The server holds to the key too: two requests at once with one key, one purchase.
    serials = page.evaluate("""async () => {
        const key = '0123456789abcdef0123456789abcdef';
        const go = () => fetch('/api/topup', {method: 'POST', headers: {'Content-Type': 'application/json',
            Authorization: 'Bearer ' + window.__app.session.token},
            body: JSON.stringify({meter: 'MTR-1', amount_minor: 200, key})}).then((r) => r.json());
        const [a, b] = await Promise.all([go(), go()]);
        return [a.serial, b.serial];
    }""")
    assert serials[0] == serials[1], serials
    page.get_by_role("button", name="Meters").click()
    expect(page.locator("#meters")).to_contain_text("Power on", timeout=5000)
    # More purchases for the figure: "Pay" to "applied" as the customer sees it, several times.
    times = [metrics["pay_to_applied_ms"]]
    for _ in range(4):
        before = page.evaluate("window.__app.pending.serial")
        buy(page, "1,00")
        wait_until(page, f"window.__app.pending && window.__app.pending.serial > {before} && !!window.__app.pending.appliedAt",
                   timeout=10000)
        times.append(round(page.evaluate("window.__payToAppliedMs"), 1))
    metrics["pay_to_applied_runs_ms"] = times
    metrics["pay_to_applied_median_ms"] = sorted(times)[len(times) // 2]


def buy(page, amount):
    page.get_by_role("button", name="Top up").click()
    page.fill("#topup-amount", amount)
    page.get_by_role("button", name="Continue").click()
    page.locator("#pay").click()


@step("a token the gateway cannot apply yet, then one it refuses: the reason and what to do")
def late_and_refused(page):
    order("try_later_next", "meter MTR-1 has no account until its first reading")
    buy(page, "2,00")
    msg = page.locator("#topup-msg")
    expect(msg).to_contain_text("The meter cannot take it yet: meter MTR-1 has no account until its first reading", timeout=10000)
    expect(msg).to_contain_text("you pay nothing more")
    expect(page.locator('#progress li[data-step="delivered"]')).to_have_class(re.compile("done"))
    shot(page, "topup-delayed.png")
    page.locator("#view-topup").screenshot(path=os.path.join(SHOTS, "small", "topup-delayed-view.png"), scale="css")
    order("refuse_next", "token expired")
    buy(page, "3,00")
    expect(msg).to_contain_text("The meter refused the token: token expired", timeout=10000)
    expect(msg).to_contain_text("call the utility with meter MTR-1")
    shot(page, "topup-refused.png")
    # The next purchase, its own answer held back until the pushed "applied" has overtaken it: the
    # steps end at Applied (not back at Paid), and the refusal's words are gone.
    def held(route):
        answer = route.fetch()
        time.sleep(1.5)
        route.fulfill(response=answer)
    page.route("**/api/topup", held)
    try:
        buy(page, "1,00")
        applied = page.locator('#progress li[data-step="applied"]')
        expect(applied).to_have_class(re.compile("done"), timeout=10000)
        expect(applied).to_have_text("Applied")
        expect(msg).to_have_text("Applied: the meter has the credit.")
        expect(page.locator('#progress li.done')).to_have_count(3)
    finally:
        page.unroute("**/api/topup")


@step("the history shows what happened, in the phone's time zone")
def history(page):
    page.get_by_role("button", name="History").click()
    expect(page.locator("#history")).to_contain_text("Applied 5,00\u00a0€")
    expect(page.locator("#history")).to_contain_text("Low credit on meter MTR-1")
    expect(page.locator("#history")).to_contain_text("Power cut off")
    entries = page.evaluate("window.__app.history")
    shown = page.locator("#history time").all_inner_texts()
    assert len(shown) == len(entries) > 0, (len(shown), len(entries))
    for e, text in zip(entries, shown):
        local = datetime.datetime.fromtimestamp(e["at"], zoneinfo.ZoneInfo(TZ))
        assert local.strftime("%d.%m.%Y") in text and local.strftime("%H:%M") in text, (e["at"], text)
    body = page.locator("body").inner_text()
    assert not re.search(r"\b1[6-9]\d{8}\b", body), "a raw Unix time is on the screen"
    shot(page, "history.png")


@step("a second phone logs in with the keys of an mpc profile file")
def import_profile(page, browser, context_args):
    keys = page.evaluate("""async (pw) => { const s = await import('/store.js'); const { hex } = await import('/milenage.js');
        const p = await s.get('profile:ada'); const k = await s.unwrap(p, pw);
        return {k: hex(k.k), opc: hex(k.opc), imsi: p.imsi, customer: p.customer}; }""", PASSWORD)
    path = os.path.join(SHOTS, "mpc-profile.toml")
    with open(path, "w") as f:  # the shape `mpc register` writes
        f.write(f'server = "localhost:8443"\nca = "ca.pem"\ncustomer = "{keys["customer"]}"\nuser = "ada"\n'
                f'imsi = "{keys["imsi"]}"\nk = "{keys["k"]}"\nopc = "{keys["opc"]}"\n\n[sqn]\nlimit = 268435456\n')
    other = browser.new_context(**context_args)
    try:
        phone = other.new_page()
        phone.goto(URL)
        wait_until(phone, "window.__app && window.__app.started === true")
        phone.get_by_text("First time on this phone? Register").click()
        phone.set_input_files("#import-file", path)
        phone.fill("#import-password", PASSWORD)
        phone.get_by_role("button", name="Use this profile").click()
        expect(phone.locator("#who")).to_have_text("Logged in as ada", timeout=20000)
        kept = phone.evaluate("async () => Object.keys(await (await import('/store.js')).get('profile:ada')).sort()")
        assert "k" not in kept and "wrapped" in kept, kept
    finally:
        other.close()
        os.remove(path)


@step("offline: the last balance and the saved token as a QR code")
def offline(page, context, metrics):
    wait_until(page, "navigator.serviceWorker && navigator.serviceWorker.controller !== null", timeout=10000)
    context.set_offline(True)
    page.reload()
    wait_until(page, "window.__app && window.__app.started === true")
    expect(page.locator("#offline")).to_contain_text("Offline")
    expect(page.locator("#meters")).to_contain_text("Power on")
    shot(page, "offline-meters.png")
    page.get_by_role("button", name="Tokens").click()
    first = page.locator("#tokens li").first
    first.get_by_role("button", name="Show QR code and text").click()
    text = first.locator(".token-text").inner_text()
    assert re.fullmatch(r"[0-9a-f]{40,}", text), text[:60]
    metrics["token_octets"] = len(text) // 2
    metrics["token_qr_version"] = page.evaluate(
        "async (t) => (await import('/qr.js')).encode(new TextEncoder().encode(t)).version", text)
    qr_path = os.path.join(SHOTS, "token-qr.png")
    first.locator("svg.qr").screenshot(path=qr_path)
    shot(page, "offline-token.png")
    zbar = shutil.which("zbarimg")
    if zbar is None:
        raise AssertionError("zbarimg is missing to decode the QR code: apt-get install -y zbar-tools")
    out = subprocess.run([zbar, "-q", "--raw", qr_path], capture_output=True, text=True)
    assert out.stdout.strip() == text, f"the QR code decodes to {out.stdout.strip()[:60]!r}, not the token"
    context.set_offline(False)


@step("a wrong password is rate-limited")
def rate_limited(page):
    page.reload()
    wait_until(page, "window.__app && window.__app.started === true")
    # After five failures each attempt waits 1, 2, 4, ... s after the last failure: an attempt that
    # takes the browser longer than the wait (a loaded machine) is let through and fails again, so go on
    # until the growing wait catches up (the tenth attempt would have to take over 16 s).
    for i in range(10):
        page.fill("#login-user", "ada")
        page.fill("#login-password", "not the password")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#login-msg")).to_have_class(re.compile("error"), timeout=10000)
        msg = page.locator("#login-msg").inner_text()
        if "try again in" in msg:
            break
    else:
        raise AssertionError(f"ten wrong passwords and no wait asked: {msg!r}")
    assert i >= 4, f"limited after {i + 1} attempts"
    shot(page, "rate-limited.png")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    metrics = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync",
                  "--ignore-certificate-errors"],
        )
        context_args = dict(
            viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True, has_touch=True,
            ignore_https_errors=True, locale="de-DE", timezone_id=TZ, service_workers="allow")
        context = browser.new_context(**context_args)
        page = context.new_page()
        page.on("console", lambda m: print(f"console.{m.type}: {m.text}", flush=True) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: print(f"page error: {e}", flush=True))
        try:
            first_load(page, metrics)
            milenage(page)
            register(page)
            low_credit(page)
            top_up(page, metrics)
            history(page)
            late_and_refused(page)
            import_profile(page, browser, context_args)
            offline(page, context, metrics)
            rate_limited(page)
        except Exception:
            shot(page, "failure.png")
        finally:
            browser.close()
    with open(os.path.join(SHOTS, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print("metrics:", json.dumps(metrics), flush=True)
    print(f"{len(passed)} passed, {len(failed)} failed", flush=True)
    return 0 if not failed and len(passed) == 10 else 1


if __name__ == "__main__":
    sys.exit(main())
