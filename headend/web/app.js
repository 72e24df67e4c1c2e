// The customer's app: log in (AKA on the phone plus the password), meters, top-up with live progress,
// history, live alerts, and the last data and every bought token kept for offline use.
import { Milenage, respond, hex, unhex } from './milenage.js';
import * as store from './store.js';
import * as qr from './qr.js';

const $ = (id) => document.getElementById(id);
const state = { session: null, user: null, meters: [], purchases: [], history: [], savedAt: null,
  ws: null, pending: null, view: 'meters' };
window.__app = state;

// ---- people-facing formatting: money with its currency, dates in the phone's own time zone ----
const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const when = (unix) => (unix ? dateFmt.format(new Date(unix * 1000)) : 'not yet');
function digits(currency) {
  return new Intl.NumberFormat(undefined, { style: 'currency', currency }).resolvedOptions().maximumFractionDigits;
}
function money(minor, currency) {
  if (minor === null || minor === undefined) return 'not reported yet';
  return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(minor / 10 ** digits(currency));
}
const energy = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
function timeEl(unix) {
  const t = document.createElement('time');
  t.dateTime = new Date(unix * 1000).toISOString();
  t.textContent = when(unix);
  return t;
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function say(id, text, error) {
  const m = $(id);
  m.textContent = text;
  m.classList.toggle('error', !!error);
}

// ---- the API ----
class ApiError extends Error {
  constructor(status, body) { super(body.message || `the server answered ${status}`); this.status = status; this.code = body.error; }
}
async function api(path, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (state.session) headers.Authorization = 'Bearer ' + state.session.token;
  const r = await fetch(path, { method: body === undefined ? 'GET' : 'POST', headers, cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    if (r.status === 401 && data.error === 'no_session') expired();
    throw new ApiError(r.status, data);
  }
  return data;
}
function networkText(e) {
  return e instanceof ApiError ? e.message : 'No connection to the payment server. Check the phone\'s network and try again.';
}

// ---- keeping the last data ----
async function saveLast() {
  state.savedAt = Math.floor(Date.now() / 1000);
  await store.put('last:' + state.user, { meters: state.meters, purchases: state.purchases,
    history: state.history, savedAt: state.savedAt });
}
async function loadLast(user) {
  const last = await store.get('last:' + user);
  if (!last) return false;
  Object.assign(state, { user, meters: last.meters, purchases: last.purchases, history: last.history,
    savedAt: last.savedAt });
  return true;
}
function mergePurchases(fresh) {
  // Tokens already on the phone stay, even if the server's list is shorter.
  const bySerial = new Map(state.purchases.map((p) => [p.meter + '#' + p.serial, p]));
  for (const p of fresh) bySerial.set(p.meter + '#' + p.serial, p);
  state.purchases = [...bySerial.values()].sort((a, b) => b.issued_at - a.issued_at || b.serial - a.serial);
}

// ---- log in: AKA on the phone, the server proves itself by AUTN, then RES and the password ----
// `imported`: K and OPc from an mpc profile file, kept (wrapped) only once the login succeeded.
async function login(user, password, imported) {
  let profile;
  let keys;
  if (imported) {
    profile = { highest: 0 };
    keys = { k: imported.k.slice(), opc: imported.opc.slice() };
  } else {
    profile = await store.get('profile:' + user);
    if (!profile) throw new Error(`This phone is not registered for "${user}". Register it with the authorization code from the bank counter.`);
    keys = await store.unwrap(profile, password);
  }
  let ch = await api('/api/login', { identity: user });
  let res = new Uint8Array(8);
  if (keys) {
    const m = await Milenage.withOpc(keys.k, keys.opc);
    keys.k.fill(0); keys.opc.fill(0);
    for (let round = 0; ; round++) {
      const r = await respond(m, unhex(ch.rand), unhex(ch.autn), profile.highest || 0);
      if (r.kind === 'mac') {
        throw new Error('The server could not prove it is your utility\'s payment server. Nothing was sent. Do not use this network; try again later.');
      }
      if (r.kind === 'ok') {
        profile.highest = r.sqn;
        if (!imported) await store.put('profile:' + user, profile);
        res = r.res;
        break;
      }
      if (round >= 2) throw new Error('The phone and the server cannot agree on a sequence number; try again.');
      ch = await api('/api/login/sync', { challenge: ch.challenge, auts: hex(r.auts) });
    }
  }
  // With a wrong password the keys do not open: the server still hears the attempt (and limits them).
  const s = await api('/api/login/finish', { challenge: ch.challenge, res: hex(res), password });
  if (imported) await store.saveProfile(imported, password, profile.highest);
  state.session = { token: s.token, customer: s.customer, user: s.user, expiresAt: s.expires_at };
  state.user = s.user;
  await store.put('lastUser', s.user);
}

function expired() {
  state.session = null;
  if (state.ws) state.ws.close();
  showAuth('Your session ended. Log in again.');
}

// ---- live alerts over one WebSocket ----
function connectLive(backoff = 1000) {
  if (!state.session) return;
  const ws = new WebSocket(`wss://${location.host}/api/live`);
  state.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ auth: state.session.token }));
  ws.onmessage = (e) => {
    let n;
    try { n = JSON.parse(e.data); } catch (err) { return; }
    if (n.type === 'hello') { state.liveReady = true; return; }
    if (n.type === 'expired') { expired(); return; }
    if (['low_credit', 'supply_cut', 'supply_restored', 'applied', 'refused', 'delivered', 'delayed', 'missed'].includes(n.type)) onNotice(n);
  };
  ws.onclose = () => {
    state.liveReady = false;
    if (state.session && state.ws === ws) setTimeout(() => connectLive(Math.min(backoff * 2, 30000)), backoff);
  };
}

const outcomes = new Map();

function showOutcome() {
  const p = state.pending;
  const n = p && outcomes.get(p.meter + '#' + p.serial);
  if (!n || p.appliedAt) return;
  if (n.type === 'applied') progress('applied');
  if (n.type === 'refused') progress('refused', n.reason, n.advice);
}

// The steps on the way, pushed: sent to the gateway, and the gateway's "not yet" with its reason.
function showStep(n) {
  const p = state.pending;
  if (!p || p.appliedAt || p.meter !== n.meter || p.serial !== n.serial || outcomes.has(n.meter + '#' + n.serial)) return;
  progress('delivered');
  if (n.type === 'delayed') say('topup-msg', `The meter cannot take it yet: ${n.reason}. ${n.advice || ''}`);
  else say('topup-msg', 'Sent to the meter. Waiting for it to apply the credit…');
}

function alertLine(text, good) {
  const p = el('p', good ? 'good' : '');
  const close = el('button', 'dismiss', '\u00d7');
  close.type = 'button';
  close.setAttribute('aria-label', 'Dismiss');
  close.onclick = () => p.remove();
  p.append(el('span', '', text), close);
  $('alerts').prepend(p);
  while ($('alerts').children.length > 2) $('alerts').lastChild.remove();
}

function meterCurrency(meter) {
  return (state.meters.find((m) => m.meter === meter) || state.meters[0] || { currency: 'EUR' }).currency;
}

function onNotice(n) {
  const cur = meterCurrency(n.meter);
  if (n.type === 'low_credit') alertLine(`Low credit on meter ${n.meter}: ${money(n.balance_minor, cur)} left. Top up to keep the power on.`);
  if (n.type === 'supply_cut') alertLine(`The power of meter ${n.meter} was cut off. Top up to bring it back.`);
  if (n.type === 'supply_restored') alertLine(`The power of meter ${n.meter} is back on.`, true);
  if (n.type === 'applied') alertLine(`${money(n.amount_minor, cur)} applied to meter ${n.meter}; the balance is now ${money(n.balance_after_minor, cur)}.`, true);
  if (n.type === 'refused') alertLine(`Meter ${n.meter} refused token ${n.serial}: ${n.reason}`);
  if (n.type === 'missed') alertLine(n.advice || `${n.count} alerts were missed; reloading.`);
  if (n.type === 'delivered' || n.type === 'delayed') { showStep(n); return; }
  // Kept by serial: the receipt can come before the top-up's own answer.
  if (n.type === 'applied' || n.type === 'refused') outcomes.set(n.meter + '#' + n.serial, n);
  showOutcome();
  refresh();
}

// ---- screens ----
function showAuth(message) {
  $('auth').hidden = false;
  $('logout').hidden = true;
  if (state.user) $('login-user').value = state.user;
  if (message) say('login-msg', message, true);
  renderWho();
}

function renderWho() {
  $('who').textContent = state.session ? `Logged in as ${state.session.user}` : (state.user ? `${state.user} (not logged in)` : '');
}

function show(view) {
  state.view = view;
  for (const b of document.querySelectorAll('#tabs button')) {
    if (b.dataset.view === view) b.setAttribute('aria-current', 'page'); else b.removeAttribute('aria-current');
  }
  for (const v of ['meters', 'topup', 'history', 'tokens']) $('view-' + v).hidden = v !== view;
}

function renderAll() {
  const have = state.meters.length > 0 || state.purchases.length > 0;
  $('tabs').hidden = !have && !state.session;
  if (!$('tabs').hidden) show(state.view);
  renderMeters(); renderTopupForm(); renderHistory(); renderTokens(); renderWho();
  const offline = !navigator.onLine || state.unreachable;
  $('offline').hidden = !(have && state.savedAt && (offline || !state.session));
  // Offline the login cannot work: the last data comes first, the form returns with the network.
  $('auth').hidden = !!state.session || (!navigator.onLine && have);
  if (state.savedAt) {
    $('offline').textContent = (offline ? 'Offline' : 'Not logged in')
      + `: showing what this phone last saw, ${when(state.savedAt)}.`;
    $('meters-age').textContent = `Last updated ${when(state.savedAt)}.`;
  }
}

function renderMeters() {
  const ul = $('meters');
  ul.replaceChildren();
  for (const m of state.meters) {
    const li = el('li', 'card');
    li.append(el('h3', '', `Meter ${m.meter}`), el('p', 'muted', `Home ${m.dwelling}`));
    const bal = el('p', 'balance' + (m.balance_minor !== null && m.balance_minor <= 0 ? ' low' : ''), money(m.balance_minor, m.currency));
    bal.setAttribute('aria-label', `Balance ${money(m.balance_minor, m.currency)}`);
    li.append(bal);
    const supply = m.supply_on === null ? el('span', 'supply', 'Supply: not reported yet')
      : el('span', 'supply ' + (m.supply_on ? 'on' : 'cut'), m.supply_on ? 'Power on' : 'Power cut off');
    li.append(supply);
    const dl = el('dl');
    dl.append(el('dt', '', 'Balance as of'), el('dd', '', when(m.balance_at)));
    dl.append(el('dt', '', 'Last reading'), el('dd', '', m.last_reading_wh === null ? 'not reported yet'
      : `${energy.format(m.last_reading_wh / 1000)} kWh, ${when(m.last_reading_at)}`));
    if (m.pending_tokens) dl.append(el('dt', '', 'On the way'), el('dd', '', `${m.pending_tokens} token(s)`));
    li.append(dl);
    ul.append(li);
  }
  if (!state.meters.length) ul.append(el('li', 'muted', 'No meters yet.'));
}

function renderTopupForm() {
  const sel = $('topup-meter');
  const keep = sel.value;
  sel.replaceChildren(...state.meters.map((m) => {
    const o = el('option', '', `${m.meter} (${m.dwelling})`);
    o.value = m.meter;
    return o;
  }));
  if (keep) sel.value = keep;
  const cur = meterCurrency(sel.value);
  $('topup-hint').textContent = `In ${cur}, for example ${money(10 ** digits(cur) * 5, cur)}.`;
}

function historyText(h) {
  const cur = meterCurrency(h.meter);
  switch (h.what) {
    case 'purchased': return [`Bought ${money(h.amount_minor, cur)} for meter ${h.meter} (token ${h.serial})`, ''];
    case 'applied': return [`Applied ${money(h.amount_minor, cur)} on meter ${h.meter}` + (h.balance_after_minor !== null ? `; balance ${money(h.balance_after_minor, cur)}` : ''), ''];
    case 'refused': return [`Meter ${h.meter} refused token ${h.serial}: ${h.detail || 'no reason given'}`, 'refused'];
    case 'low_credit': return [`Low credit on meter ${h.meter}` + (h.balance_after_minor !== null ? `: ${money(h.balance_after_minor, cur)} left` : ''), 'refused'];
    case 'supply_cut': return [`Power cut off at meter ${h.meter}`, 'refused'];
    case 'supply_restored': return [`Power back on at meter ${h.meter}`, ''];
    default: return [h.what, ''];
  }
}

// Newest first; within one second, in the order things happen (bought, then applied or refused,
// then the power back on).
// Within one second (the times' resolution): power back on above the purchases that brought it back,
// then each token's steps together (newest token first, its outcome above its purchase), then alerts.
const GROUP = { supply_restored: 2, purchased: 1, refused: 1, applied: 1, low_credit: 0, supply_cut: 0 };
const RANK = { low_credit: 0, supply_cut: 1, purchased: 2, refused: 3, applied: 4, supply_restored: 5 };
function sortHistory(list) {
  return list.slice().sort((a, b) => b.at - a.at || (GROUP[b.what] ?? 0) - (GROUP[a.what] ?? 0)
    || (b.serial ?? 0) - (a.serial ?? 0) || (RANK[b.what] ?? 0) - (RANK[a.what] ?? 0));
}

function renderHistory() {
  const ul = $('history');
  ul.replaceChildren();
  for (const h of state.history) {
    const [text, cls] = historyText(h);
    const li = el('li');
    li.append(timeEl(h.at), el('span', 'what ' + cls, text));
    ul.append(li);
  }
  if (!state.history.length) ul.append(el('li', 'muted', 'Nothing yet.'));
}

const stateText = { paid: 'Paid, on its way', delivered: 'Sent to the meter', applied: 'Applied', refused: 'Refused' };

function renderTokens() {
  const ul = $('tokens');
  ul.replaceChildren();
  for (const p of state.purchases) {
    const li = el('li');
    li.append(el('span', 'what', `${money(p.amount_minor, p.currency)} for meter ${p.meter}, token ${p.serial}`));
    li.append(el('span', 'muted', ` ${stateText[p.state] || p.state}` + (p.reason ? `: ${p.reason}` : '')));
    li.append(el('p', 'muted', `Bought ${when(p.issued_at)}; valid until ${when(p.expires_at)}`));
    const btn = el('button', 'secondary', 'Show QR code and text');
    btn.type = 'button';
    btn.setAttribute('aria-expanded', 'false');
    const box = el('div');
    box.hidden = true;
    btn.onclick = () => {
      if (!box.firstChild) {
        const svg = qr.svg(p.token, `QR code of token ${p.serial} for meter ${p.meter}`);
        svg.classList.add('qr');
        box.append(svg, el('p', 'token-text', p.token));
      }
      box.hidden = !box.hidden;
      btn.setAttribute('aria-expanded', String(!box.hidden));
      btn.textContent = box.hidden ? 'Show QR code and text' : 'Hide QR code and text';
    };
    li.append(btn, box);
    ul.append(li);
  }
  if (!state.purchases.length) ul.append(el('li', 'muted', 'No tokens on this phone yet.'));
}

// ---- top-up ----
function parseAmount(text, currency) {
  const d = digits(currency);
  const t = text.trim().replace(/\s/g, '').replace(',', '.');
  if (!/^\d+(\.\d+)?$/.test(t)) return null;
  const [whole, frac = ''] = t.split('.');
  if (frac.length > d) return null;
  return Number(whole) * 10 ** d + Number((frac + '0'.repeat(d)).slice(0, d) || 0);
}

// The steps of the purchase on show never go back: an answer or a poll that left before a pushed
// step came (the pushed "applied" can overtake the top-up's own answer) must not undo it.
const STEP_RANK = { paid: 0, delivered: 1, applied: 2, refused: 2 };

function progress(step, reason, advice) {
  const order = ['paid', 'delivered', 'applied'];
  const p = state.pending;
  if (p) {
    if (p.shown === 2 || STEP_RANK[step] < (p.shown ?? 0)) return false;
    p.shown = STEP_RANK[step];
  }
  $('progress').hidden = false;
  for (const li of $('progress').children) {
    li.classList.remove('done', 'failed');
    if (step === 'refused') {
      if (li.dataset.step !== 'applied') li.classList.add('done'); else { li.classList.add('failed'); li.textContent = `Refused: ${reason}`; }
    } else {
      // A refusal of an earlier purchase rewrote this line.
      if (li.dataset.step === 'applied') li.textContent = 'Applied';
      if (order.indexOf(li.dataset.step) <= order.indexOf(step)) li.classList.add('done');
    }
  }
  if (step === 'applied' && state.pending) {
    if (!state.pending.appliedAt) state.pending.appliedAt = performance.now();
    window.__payToAppliedMs = state.pending.appliedAt - state.pending.startedAt;
    say('topup-msg', 'Applied: the meter has the credit.');
  }
  if (step === 'refused') say('topup-msg', `The meter refused the token: ${reason}. ${advice || 'Your payment stays in the utility\'s payment record: call the utility to have it refunded.'} The token is kept on this phone (Tokens) and in your history.`, true);
  return true;
}

function startTopup(e) {
  e.preventDefault();
  const meter = $('topup-meter').value;
  const cur = meterCurrency(meter);
  const minor = parseAmount($('topup-amount').value, cur);
  if (!meter) { say('topup-msg', 'Choose a meter.', true); return; }
  if (minor === null || minor <= 0) { say('topup-msg', `Type an amount in ${cur}, for example 5.00.`, true); return; }
  say('topup-msg', '');
  $('progress').hidden = true;
  // One key per confirmation: a double tap or a retry sends the same key and buys once.
  state.confirm = { meter, minor, currency: cur, key: hex(crypto.getRandomValues(new Uint8Array(16))) };
  $('confirm-text').textContent = `Pay ${money(minor, cur)} for meter ${meter}?`;
  $('confirm').hidden = false;
  $('pay').disabled = false;
  $('pay').focus();
}

async function pay() {
  const c = state.confirm;
  if (!c) return;
  if (!state.session) { showAuth('Log in to top up.'); return; }
  $('pay').disabled = true;
  const startedAt = performance.now();
  try {
    const p = await api('/api/topup', { meter: c.meter, amount_minor: c.minor, key: c.key });
    if (!state.pending || state.pending.serial !== p.serial) state.pending = { meter: p.meter, serial: p.serial, startedAt };
    state.confirm = null;
    $('confirm').hidden = true;
    mergePurchases([p]);
    // Shown before anything is awaited: a step pushed meanwhile lands on top of this answer.
    const shown = progress(p.state === 'refused' ? 'refused' : p.state, p.reason, p.advice);
    if (shown && p.state !== 'applied' && p.state !== 'refused') say('topup-msg', `Paid ${money(p.amount_minor, p.currency)}. Waiting for the meter…`);
    showOutcome();
    await saveLast();
    renderTokens();
    watchPending();
  } catch (e) {
    $('pay').disabled = false;
    say('topup-msg', networkText(e) + ' You were not charged twice: trying again uses the same payment.', true);
  }
}

// Every step is pushed on the live stream; while that stream is down (a bad connection), the
// purchase's state is read now and then instead.
async function watchPending() {
  const p0 = state.pending;
  for (let i = 0; i < 120 && state.pending === p0 && !p0.appliedAt; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    if (state.liveReady) continue;
    try {
      const list = await api('/api/purchases');
      const p = list.find((x) => x.meter === p0.meter && x.serial === p0.serial);
      if (p && state.pending === p0 && !p0.appliedAt) {
        if (!progress(p.state, p.reason, p.advice)) continue;
        if (p.state === 'refused') return;
        if (p.reason) say('topup-msg', `The meter cannot take it yet: ${p.reason}. ${p.advice || ''}`);
      }
    } catch (e) { /* offline for a moment: the next round tries again */ }
  }
}

// ---- refresh from the server ----
async function refresh() {
  if (!state.session) return;
  try {
    const [meters, purchases, history] = await Promise.all([api('/api/meters'), api('/api/purchases'), api('/api/history')]);
    state.meters = meters;
    mergePurchases(purchases);
    state.history = sortHistory(history);
    state.unreachable = false;
    await saveLast();
  } catch (e) {
    if (!(e instanceof ApiError)) state.unreachable = true;
  }
  renderAll();
}

async function afterLogin() {
  $('auth').hidden = true;
  $('logout').hidden = false;
  say('login-msg', '');
  $('login-password').value = '';
  connectLive();
  await refresh();
  $('main').focus();
}

// ---- wiring ----
$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const user = $('login-user').value.trim();
  const pass = $('login-password').value;
  if (!user || !pass) { say('login-msg', 'Type your user name and password.', true); return; }
  const b = e.target.querySelector('button');
  b.disabled = true;
  say('login-msg', 'Checking…');
  try {
    await login(user, pass);
    await afterLogin();
  } catch (err) {
    say('login-msg', err instanceof ApiError || err instanceof TypeError ? networkText(err) : err.message, true);
  } finally { b.disabled = false; }
});

$('register-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const code = $('reg-code').value.trim(); const user = $('reg-user').value.trim(); const pass = $('reg-password').value;
  if (!code || !user || pass.length < 8) { say('reg-msg', 'Fill in the code, a user name and a password of at least 8 characters.', true); return; }
  const b = e.target.querySelector('button');
  b.disabled = true;
  say('reg-msg', 'Registering…');
  try {
    const r = await api('/api/register', { code, user, password: pass });
    await store.saveProfile({ user: r.user, customer: r.customer, imsi: r.imsi, k: unhex(r.k), opc: unhex(r.opc) }, pass);
    say('reg-msg', 'Registered. Logging in…');
    await login(r.user, pass);
    $('register-box').open = false;
    say('reg-msg', '');
    await afterLogin();
  } catch (err) {
    say('reg-msg', networkText(err), true);
  } finally { b.disabled = false; }
});

// The keys `mpc register` wrote (its profile file), for a customer who registered with the command-line
// client: read here, used for one login, and kept on this phone only wrapped under the password.
export function parseMpcProfile(text) {
  const field = (name) => {
    const m = new RegExp(`^\\s*${name}\\s*=\\s*"([^"]*)"`, 'm').exec(text);
    if (!m) throw new Error(`The file has no ${name}: choose the profile file mpc register wrote (MPC_PROFILE).`);
    return m[1];
  };
  const k = unhex(field('k')); const opc = unhex(field('opc'));
  if (k.length !== 16 || opc.length !== 16) throw new Error('The profile\'s k and opc must be 16 octets each.');
  return { user: field('user'), customer: field('customer'), imsi: field('imsi'), k, opc };
}
window.__parseMpcProfile = parseMpcProfile;

$('import-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const file = $('import-file').files[0];
  const pass = $('import-password').value;
  if (!file || !pass) { say('import-msg', 'Choose the profile file and type your password.', true); return; }
  const b = e.target.querySelector('button');
  b.disabled = true;
  say('import-msg', 'Checking…');
  try {
    const imported = parseMpcProfile(await file.text());
    await login(imported.user, pass, imported);
    say('import-msg', '');
    $('register-box').open = false;
    await afterLogin();
  } catch (err) {
    say('import-msg', err instanceof ApiError || err instanceof TypeError ? networkText(err) : err.message, true);
  } finally { b.disabled = false; }
});

$('topup-form').addEventListener('submit', startTopup);
$('topup-meter').addEventListener('change', renderTopupForm);
$('pay').addEventListener('click', pay);
$('cancel').addEventListener('click', () => { state.confirm = null; $('confirm').hidden = true; });
$('logout').addEventListener('click', async () => {
  try { await api('/api/logout', {}); } catch (e) { /* ends locally anyway */ }
  state.session = null;
  if (state.ws) state.ws.close();
  showAuth();
  renderAll();
});
for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => show(b.dataset.view));
window.addEventListener('online', renderAll);
window.addEventListener('offline', renderAll);

async function start() {
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('/sw.js').then(() => { state.swReady = true; }, (e) => { state.swError = String(e); });
  }
  const last = await store.get('lastUser');
  if (last) {
    state.user = last;
    await loadLast(last);
  }
  showAuth();
  renderAll();
  state.started = true;
}
start();
