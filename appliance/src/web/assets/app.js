// The installer UI: a view of the daemon's state, pushed over one Server-Sent Events stream
// (/api/stream); actions are POSTs that the daemon carries out through its control operations.
"use strict";
const $ = (s) => document.querySelector(s);
// A count with its noun in the right number: count(1, "meter", "meters") is "1 meter".
const count = (n, one, many) => `${n} ${n === 1 ? one : many}`;
// Octets as people read them: "812 KiB", "37.4 MiB", "2.1 GiB".
function size(n) {
  if (n >= 1073741824) return `${(n / 1073741824).toFixed(1)} GiB`;
  if (n >= 1048576) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${Math.max(1, Math.round(n / 1024))} KiB`;
}
let me = null, state = null, stream = null, lastDevices = -1, permitTimer = null, scanFound = [];

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}
function money(minor, currency) {
  const n = Math.abs(minor), s = minor < 0 ? "-" : "";
  return `${s}${Math.floor(n / 100)}.${String(n % 100).padStart(2, "0")} ${currency}`;
}
function localTime(unix) { return unix ? new Date(unix * 1000).toLocaleString() : "never"; }
function duration(sec) {
  return sec < 60 ? `${sec} s` : sec < 3600 ? `${Math.floor(sec / 60)} min ${sec % 60} s`
    : sec < 86400 ? `${Math.floor(sec / 3600)} h ${Math.floor(sec % 3600 / 60)} min` : `${Math.floor(sec / 86400)} days ${Math.floor(sec % 86400 / 3600)} h`;
}
function kwh(wh) { return `${wh < 0 ? "-" : ""}${(Math.abs(wh) / 1000).toFixed(3)} kWh`; }
// One block-balance interval in words, from the engine's judgement (s.balance.groups[name].state.last).
function balanceWords(j) {
  const pct = j.feeder_wh > 0 ? (Math.abs(j.difference_wh) * 100 / j.feeder_wh).toFixed(1) : "0.0";
  return `from ${localTime(j.start)} to ${localTime(j.end)} the feeder measured ${kwh(j.feeder_wh)}, the dwellings ${kwh(j.dwellings_wh)}: ` +
    `${kwh(Math.abs(j.difference_wh))} (${pct} %) ${j.difference_wh >= 0 ? "unaccounted for" : "more at the dwellings than at the feeder"}, ${kwh(j.allowed_wh)} allowed`;
}
function drift(d) { return d === 0 ? "on time" : `${duration(Math.abs(d))} ${d > 0 ? "ahead of" : "behind"} the gateway`; }
// A meter's clock in words, from the time keeper's record (s.time.meters["bus/address"]).
function meterClock(c) {
  if (!c) return "-";
  switch (c.state) {
    case "no-clock": return "no clock to read";
    case "unread": return "not read (no answer)";
    case "not-judged": return "not judged: the gateway's clock is not trustworthy";
    case "refused": return `${drift(c.drift_s)}: did not take the gateway's time`;
    case "drifted": return `${drift(c.drift_s)}: past the limit`;
    default: return c.drift_s == null ? "not read yet" : drift(c.drift_s);
  }
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (me) headers["X-CSRF-Token"] = me.csrf;
  const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined, credentials: "same-origin" });
  let data = {};
  try { data = await r.json(); } catch (_) { /* empty answer */ }
  if (r.status === 401 && path !== "/api/login") showLogin();
  if (!r.ok) throw new Error(data.error || `the gateway answered ${r.status}`);
  return data;
}

function showLogin() {
  me = null;
  if (stream) { stream.close(); stream = null; }
  $("#login").hidden = false; $("#app").hidden = true; $("#who").hidden = true;
}
function showApp() {
  $("#login").hidden = true; $("#app").hidden = false; $("#who").hidden = false;
  $("#user").textContent = `${me.user} (${me.role})`;
  const ro = me.role !== "installer";
  $("#readonly-note").hidden = !ro;
  for (const f of document.querySelectorAll("form.act button, form.act input, form.act textarea, form.act select"))
    if (f.id !== "relay-meter") f.disabled = ro;
  route();
  connect();
}

function connect() {
  if (stream) stream.close();
  stream = new EventSource("/api/stream");
  stream.addEventListener("open", () => { $("#live").textContent = "Live: updates arrive as they happen."; });
  stream.addEventListener("error", () => { $("#live").textContent = "Connection to the gateway lost; reconnecting…"; fetch("/api/me").then((r) => { if (r.status === 401) showLogin(); }); });
  stream.addEventListener("state", (m) => { state = JSON.parse(m.data); render(); });
  stream.addEventListener("events", (m) => { $("#event-list").replaceChildren(); for (const e of JSON.parse(m.data)) addEvent(e); });
  stream.addEventListener("event", (m) => addEvent(JSON.parse(m.data)));
  stream.addEventListener("scan", (m) => scanProgress(JSON.parse(m.data)));
  stream.addEventListener("logs", (m) => { $("#log-tail").textContent = ""; for (const l of JSON.parse(m.data)) addLog(l); });
  stream.addEventListener("log", (m) => addLog(JSON.parse(m.data)));
}

function addLog(line) {
  const t = $("#log-tail"), atEnd = t.scrollTop + t.clientHeight >= t.scrollHeight - 4;
  t.append(line + "\n");
  while (t.childNodes.length > 300) t.firstChild.remove();
  if (atEnd) t.scrollTop = t.scrollHeight;
}

function addEvent(e) {
  $("#event-list").prepend(el("li", {}, el("time", { text: e.at }), el("strong", { text: e.kind + " " }), e.text));
}

// What is wrong, and what to do about it.
function problems(s) {
  const out = [];
  const bad = (what, fix, warn) => out.push({ what, fix, warn });
  const cfg = s.configured || [];
  for (const [name, b] of Object.entries(s.buses || {})) {
    if (s.zigbee && s.zigbee[name]) continue;
    if (b.state === "retrying") {
      const dw = cfg.filter((m) => m.bus === name).map((m) => m.dwelling);
      bad(`Bus ${name}: its adapter is missing or cannot be opened (${b.detail}).`,
        `Plug the RS485 adapter back in or check the device path in the configuration. Dwellings not read meanwhile: ${dw.join(", ") || "none configured"}.`);
      continue;
    }
    const meters = b.meters || [];
    if (b.state === "running" && meters.length && meters.every((m) => m.state === "offline" && !(m.stats.driver_faults > 0)))
      bad(`Bus ${name}: no meter answers.`, "Check the bus wiring (A/B swapped?), the termination and the line settings.");
    else for (const m of meters) {
      if (m.state === "offline" && m.stats.driver_faults > 0) bad(`Meter ${m.address} (${m.dwelling}) on ${name} is not read: its driver ${m.driver} failed ${count(m.stats.driver_faults, "time", "times")} and may be quarantined.`, "A software fault, not the wiring: install a fixed driver plugin, then restart the daemon.");
      else if (m.state === "offline") bad(`Meter ${m.address} (${m.dwelling}) on ${name} is offline: ${m.stats.timeouts} timeouts.`, "Check its wiring and that its address matches the configuration.");
      if (m.state === "failed") {
        const soft = /quarantin|driver|plugin/i.test(m.error || "");
        bad(`Meter ${m.address} (${m.dwelling}) on ${name} cannot be driven: ${m.error}.`, soft ? "A software fault, not the wiring: install a fixed version of the driver plugin (with its signature), then restart the daemon." : "Check the configuration of this meter.");
      }
    }
  }
  for (const d of s.drivers || []) if (/quarantin/i.test(d)) bad(`Driver ${d}.`, "Its meters are not read: install a fixed plugin version, then restart.");
  for (const [name, z] of Object.entries(s.zigbee || {})) {
    if (!z.link_up) bad(`Zigbee coordinator ${name} is not up${z.last_error ? ": " + z.last_error : ""}.`, "Plug the Zigbee stick in (or check its path); its meters are not read meanwhile.");
  }
  for (const [meter, a] of Object.entries(s.accounts || {})) {
    if (a.held_by) bad(`Dwelling ${a.dwelling} (meter ${meter}) is cut off: held off by ${a.held_by}.`, "Close its relay from the Relay test page when the work is done.", true);
    else if (a.state === "disconnected" || a.state === "exhausted") bad(`Dwelling ${a.dwelling} (meter ${meter}) is cut off: no credit (${money(a.balance_minor, a.currency)}).`, "The customer must top up; a token can be applied on the Accounts page.", true);
  }
  if (s.uplink && !s.uplink.connected) bad(`The uplink to the head-end is not connected${s.uplink.last_error ? ": " + s.uplink.last_error : ""}.`, `${count(s.uplink.outbox, "message waits", "messages wait")} in the outbox. Check the modem and the network.`);
  if (s.modem) {
    const m = s.modem;
    if (m.sim && m.sim !== "ready") bad(`Modem: the SIM is ${m.sim}.`, "Insert a working SIM or enter its PIN in the configuration.");
    if (!m.link_up) bad(`Modem: the data link is down${m.last_problem ? " (" + m.last_problem + ")" : ""}.`, "Check the antenna and the signal; the modem is reset automatically.");
  }
  if (s.time) {
    if (!s.time.source) bad(`The gateway's clock is ${s.time.detail}.`, "Meter clocks are not set until it is: check the network (NTP), the modem, or the head-end's time sync.", true);
    for (const [key, c] of Object.entries(s.time.meters || {})) {
      if (c.state === "drifted" || c.state === "refused") bad(`Meter ${key} (${c.dwelling}): ${c.problem}.`, c.state === "refused" ? "Set its clock on site with the meter's own tool, or replace the meter." : `It is set at the daily time sync (${String(s.time.sync_hour).padStart(2, "0")}:00).`, c.state === "drifted");
    }
  }
  if (s.balance) {
    for (const [name, g] of Object.entries(s.balance.groups || {})) {
      if (g.state.alarm && g.state.last) bad(`Block ${name}: ${balanceWords(g.state.last)}: possible theft or a fault.`, `Inspect the wiring between the feeder meter ${g.feeder} and the dwellings' meters; the alarm clears after an interval back within the allowance.`);
    }
  }
  if (s.now_unix && Math.abs(Date.now() / 1000 - s.now_unix) > 120) bad(`The gateway's clock differs from this device's by ${Math.round(Math.abs(Date.now() / 1000 - s.now_unix) / 60)} minutes.`, "Check that the gateway reaches its time server.", true);
  if (s.store && s.store.free_bytes != null && s.store.free_bytes < 50 * 1048576) bad(`The store has only ${size(s.store.free_bytes)} free.`, "Free space on the gateway's storage.");
  return out;
}

function bars(dbm) { return dbm == null ? "" : dbm >= -73 ? "▂▄▆█" : dbm >= -83 ? "▂▄▆" : dbm >= -93 ? "▂▄" : "▂"; }

function render() {
  const s = state;
  $("#gateway").textContent = s.gateway;
  const list = problems(s);
  const v = $("#verdict");
  v.className = list.some((p) => !p.warn) ? "bad" : list.length ? "bad" : "ok";
  v.textContent = list.length ? (list.length === 1 ? "1 thing needs attention" : `${list.length} things need attention`) : "All is well: every bus, meter and link works.";
  $("#problems").replaceChildren(...list.map((p) => el("li", { class: p.warn ? "warn" : "" }, el("span", { class: "what", text: p.what }), el("span", { class: "fix", text: p.fix }))));
  const facts = [["Gateway time", s.now], ["Drivers", (s.drivers || []).join("; ")]];
  if (s.time) facts.push(["Gateway clock", `${s.time.detail}; meter clocks set daily at ${String(s.time.sync_hour).padStart(2, "0")}:00 (${s.time.last_sync_unix ? "last " + localTime(s.time.last_sync_unix) : "not yet done since the start"}), drift limit ${s.time.drift_limit_s} s`]);
  if (s.balance) {
    for (const [name, g] of Object.entries(s.balance.groups || {})) {
      const st = g.state;
      facts.push([`Block ${name}`, `feeder ${g.feeder} and ${count(g.dwellings, "dwelling meter", "dwelling meters")}; ${count(st.judged, "interval", "intervals")} judged, ${st.over} over, ${st.incomplete} incomplete, ${st.skipped} skipped` +
        (st.last ? `; last ${balanceWords(st.last)}` : "; no interval judged yet")]);
    }
  }
  if (s.uplink) facts.push(["Uplink", `${s.uplink.connected ? "connected" : "not connected"} to ${s.uplink.broker}; outbox ${s.uplink.outbox}; last acknowledgement ${localTime(s.uplink.last_ack_unix)}`]);
  if (s.modem) facts.push(["Modem", `SIM ${s.modem.sim || "unknown"}, ${s.modem.registration || "unregistered"} ${s.modem.operator || ""}, signal ${s.modem.rssi_dbm ?? "?"} dBm ${bars(s.modem.rssi_dbm)}, data link ${s.modem.link_up ? "up" : "down"}`]);
  if (s.store) facts.push(["Store", `${size(s.store.used_bytes)} used, ${s.store.free_bytes == null ? "free space unknown" : size(s.store.free_bytes) + " free"}`]);
  $("#facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  renderBuses(s); renderAccounts(s); renderZigbee(s);
}

function renderBuses(s) {
  const out = [];
  for (const [name, b] of Object.entries(s.buses || {})) {
    const heads = ["Address", "Dwelling", "Driver", "State", "Last reading", "Clock", "Response", "Timeouts / requests"];
    const clocks = (s.time && s.time.meters) || {};
    const rows = (b.meters || []).map((m) => el("tr", {}, ...[
      el("td", { text: m.address }), el("td", { text: m.dwelling }), el("td", { text: m.driver }),
      el("td", { class: "state-" + m.state, text: m.state + (m.error ? ": " + m.error : "") }),
      el("td", { text: (m.readings || []).join(", ") }),
      el("td", { class: "clock-" + ((clocks[`${name}/${m.address}`] || {}).state || "none"), text: meterClock(clocks[`${name}/${m.address}`]) }),
      el("td", { class: "num", text: m.stats.last_latency_ms == null ? "-" : m.stats.last_latency_ms.toFixed(0) + " ms" }),
      el("td", { class: "num", text: `${m.stats.timeouts} / ${m.stats.requests}` })].map((td, i) => { td.setAttribute("data-label", heads[i]); return td; })));
    const table = el("table", { class: "cards" }, el("caption", { text: `Meters on ${name}` }),
      el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows));
    out.push(el("div", { class: "bus" }, el("h3", {}, `${name} `, el("span", { class: "state-" + b.state, text: b.state })), el("p", { text: b.detail }), el("div", { class: "scroll" }, table)));
  }
  $("#bus-list").replaceChildren(...out);
  const sel = $("#scan-bus"), cur = sel.value;
  const names = (s.configured_buses || []);
  if (sel.options.length !== names.length) { sel.replaceChildren(...names.map((n) => el("option", { value: n, text: n }))); if (cur) sel.value = cur; }
}

function renderAccounts(s) {
  // data-label: the column's name, shown beside each value when the table becomes cards (phone width).
  const rows = Object.entries(s.accounts || {}).map(([meter, a]) => el("tr", {},
    el("td", { "data-label": "Dwelling", text: a.dwelling }), el("td", { "data-label": "Meter", text: meter }),
    el("td", { class: "num", "data-label": "Balance", text: money(a.balance_minor, a.currency) }),
    el("td", { class: "state-" + a.state, "data-label": "State", text: a.state + (a.held_by ? ` (held off by ${a.held_by})` : "") }),
    el("td", { "data-label": "Relay", text: a.relay_read_back || "-" }),
    el("td", { "data-label": "Last top-up", text: a.last_topup_unix ? `${money(a.last_topup_minor || 0, a.currency)} on ${localTime(a.last_topup_unix)}` : "none yet" })));
  $("#account-table tbody").replaceChildren(...rows);
  const sel = $("#relay-meter"), cur = sel.value, metersNow = Object.keys(s.accounts || {});
  if (sel.options.length !== metersNow.length) {
    sel.replaceChildren(...Object.entries(s.accounts || {}).map(([m, a]) => el("option", { value: m, text: `${a.dwelling} — meter ${m}` })));
    if (cur) sel.value = cur;
  }
}

function renderZigbee(s) {
  const zs = Object.entries(s.zigbee || {});
  $("#coordinators").replaceChildren(...zs.map(([n, z]) => el("p", {}, el("strong", { text: n + ": " }),
    `${z.link_up ? "up" : "down"}, ${count(z.devices, "device", "devices")}, firmware ${z.firmware || "unknown"}`)));
  const until = zs.map(([, z]) => z.permit_join_until_unix || 0).reduce((a, b) => Math.max(a, b), 0);
  countdown(until ? until - s.now_unix : 0);
  const devices = zs.reduce((a, [, z]) => a + z.devices, 0);
  if (devices !== lastDevices && zs.length) { lastDevices = devices; loadDevices(); }
}

function countdown(seconds) {
  clearInterval(permitTimer);
  let left = Math.max(0, Math.round(seconds));
  const show = () => { $("#permit-countdown").textContent = left > 0 ? `Joining permitted: ${left} s left` : "Joining closed."; };
  show();
  if (left > 0) permitTimer = setInterval(() => { left -= 1; show(); if (left <= 0) clearInterval(permitTimer); }, 1000);
}

async function loadDevices() {
  try {
    const all = await api("GET", "/api/zigbee/devices");
    const rows = [];
    for (const c of all) for (const d of (c.devices || [])) {
      const remove = el("button", { type: "button", "aria-label": `Remove ${d.ieee}` }, "Remove");
      remove.disabled = !me || me.role !== "installer";
      remove.addEventListener("click", async () => {
        if (!confirm(`Ask ${d.ieee} to leave the network?`)) return;
        try { await api("POST", "/api/zigbee/remove", { ieee: d.ieee, coordinator: c.coordinator }); loadDevices(); }
        catch (e) { $("#permit-countdown").textContent = e.message; }
      });
      rows.push(el("tr", {}, el("td", { text: d.ieee }), el("td", { text: d.dwelling || "-" }), el("td", { text: d.interviewed ? "interviewed" : "joined, being interviewed" }), el("td", {}, remove)));
    }
    $("#device-table tbody").replaceChildren(...rows);
  } catch (e) { $("#device-table tbody").replaceChildren(el("tr", {}, el("td", { colspan: "4", text: e.message }))); }
}

function result(box, ok, text, detail) {
  $(box).replaceChildren(el("div", { class: ok ? "result" : "result bad" }, el("strong", { text }), detail ? el("pre", { text: detail }) : null));
}

async function relay(action) {
  const meter = $("#relay-meter").value;
  result("#relay-result", true, `Ordering the relay of meter ${meter} to ${action}… waiting for the read-back.`);
  try {
    const r = await api("POST", "/api/relay", { meter, action });
    result("#relay-result", true, `Meter ${r.meter}: the relay reads back ${r.read_back}.`);
  } catch (e) { result("#relay-result", false, e.message); }
}

async function applyToken(ev) {
  ev.preventDefault();
  let token = $("#token-text").value.trim();
  const file = $("#token-file").files[0];
  if (!token && file) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const text = new TextDecoder().decode(bytes).trim();
    token = /^[0-9a-fA-F\s]+$/.test(text) ? text : Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  if (!token) { result("#token-result", false, "Paste the token or choose its file first."); return; }
  try {
    const r = await api("POST", "/api/token", { token });
    const c = r.receipt;
    result("#token-result", true, `Applied: token ${c.serial} for meter ${c.meter}, ${c.amount}; balance now ${c.balance_after} (${c.applied}).`, `Receipt (signed, for the head-end):\n${c.signed_hex}`);
    $("#token-text").value = ""; $("#token-file").value = "";
  } catch (e) { result("#token-result", false, e.message); }
}

async function applyTenancy(ev) {
  ev.preventDefault();
  const file = $("#tenancy-file").files[0];
  if (!file) { result("#tenancy-result", false, "Choose the order file the utility sent first."); return; }
  const bytes = new Uint8Array(await file.arrayBuffer());
  const text = new TextDecoder().decode(bytes).trim();
  const order = /^[0-9a-fA-F\s]+$/.test(text) ? text : Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  try {
    const r = await api("POST", "/api/tenancy", { order });
    result("#tenancy-result", true, r.text);
    $("#tenancy-file").value = "";
  } catch (e) { result("#tenancy-result", false, e.message); }
}

async function scan(ev) {
  ev.preventDefault();
  $("#map-form").hidden = true; $("#map-result").replaceChildren();
  $("#scan-progress").hidden = false; $("#scan-text").textContent = "Starting the scan…";
  try { await api("POST", "/api/commission/scan", { bus: $("#scan-bus").value, protocol: $("#scan-protocol").value }); }
  catch (e) { $("#scan-text").textContent = e.message; }
}

function scanProgress(p) {
  $("#scan-progress").hidden = false;
  const pct = p.total ? Math.floor(100 * p.done / p.total) : 0;
  $("#scan-bar").value = p.finished ? 100 : pct;
  const found = p.found || [];
  $("#scan-live").replaceChildren(...found.map((f) => el("li", { text: `${f.address} (${f.driver}${f.model ? ", " + f.model : ""}) at ${f.line}` })));
  if (p.finished) {
    $("#scan-text").textContent = p.error
      ? `Scan of ${p.bus} stopped: ${count(found.length, "meter", "meters")} found before. ${p.error}`
      : `Scan of ${p.bus} finished: ${count(found.length, "meter", "meters")} found.`;
    $("#scan-text").classList.toggle("bad", !!p.error);
    scanFound = found; showFound(p.bus);
  } else {
    $("#scan-text").classList.remove("bad");
    $("#scan-text").textContent = `${p.phase}: ${p.done} of ${p.total} addresses tried (${p.what}), ${found.length} found so far, about ${p.left || p.seconds_left + " s"} left.`;
  }
}

function showFound(bus) {
  const conf = (state && state.configured) || [];
  const rows = scanFound.map((f, i) => {
    const known = conf.find((m) => m.bus === bus && m.address === f.address);
    const input = el("input", { id: `dw-${i}`, value: known ? known.dwelling : "", "aria-describedby": `dw-err-${i}` });
    return el("tr", { "data-address": f.address }, el("td", { text: f.address }), el("td", { text: f.driver }), el("td", { text: f.model || "-" }),
      el("td", {}, el("label", { for: `dw-${i}`, class: "visually-hidden", text: `Dwelling of ${f.address}` }), input, el("span", { id: `dw-err-${i}`, class: "field-error" })));
  });
  $("#found-table tbody").replaceChildren(...rows);
  $("#map-form").hidden = scanFound.length === 0;
  $("#map-form").dataset.bus = bus;
}

async function commission(ev) {
  ev.preventDefault();
  const bus = $("#map-form").dataset.bus;
  const meters = scanFound.map((f, i) => ({ address: f.address, driver: f.driver, model: f.model, dwelling: $(`#dw-${i}`).value }));
  for (const s of document.querySelectorAll(".field-error")) s.textContent = "";
  try {
    const r = await api("POST", "/api/commission/apply", { bus, meters });
    if (r.ok) { result("#map-result", true, `Written to ${r.written}; the daemon restarts on it now. This page reconnects by itself.`); return; }
    const general = [];
    for (const e of r.errors) {
      const i = scanFound.findIndex((f) => f.address === e.address);
      const msg = e.message + (e.help ? ` — ${e.help}` : "");
      if (i >= 0) $(`#dw-err-${i}`).textContent = (e.field && e.field !== "dwelling" ? `${e.field}: ` : "") + msg; else general.push((e.line ? `line ${e.line}: ` : "") + msg);
    }
    if (r.config) general.push("", r.config);
    result("#map-result", false, r.config ? "The configuration is valid but was not written." : "The configuration was not written: fix the fields marked.", general.join("\n") || null);
  } catch (e) { result("#map-result", false, e.message); }
}

async function permit(ev) {
  ev.preventDefault();
  try { await api("POST", "/api/zigbee/permit", { seconds: Number($("#permit-seconds").value) }); countdown(Number($("#permit-seconds").value)); }
  catch (e) { $("#permit-countdown").textContent = e.message; }
}

function route() {
  const page = (location.hash || "#overview").slice(1);
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== page;
  for (const a of document.querySelectorAll("nav a")) if (a.getAttribute("href") === "#" + page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#login-error").textContent = "";
    try { me = await api("POST", "/api/login", { name: $("#login-name").value, password: $("#login-password").value }); $("#login-password").value = ""; showApp(); }
    catch (e) { $("#login-error").textContent = e.message; }
  });
  $("#logout").addEventListener("click", async () => { try { await api("POST", "/api/logout"); } catch (_) { /* gone anyway */ } showLogin(); });
  $("#relay-open").addEventListener("click", () => relay("open"));
  $("#relay-close").addEventListener("click", () => relay("close"));
  $("#token-form").addEventListener("submit", applyToken);
  $("#tenancy-form").addEventListener("submit", applyTenancy);
  $("#scan-form").addEventListener("submit", scan);
  $("#map-form").addEventListener("submit", commission);
  $("#permit-form").addEventListener("submit", permit);
  try { me = await api("GET", "/api/me"); showApp(); } catch (_) { showLogin(); }
});
