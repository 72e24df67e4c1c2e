// What the phone keeps: in IndexedDB, one object store of records by key.
//   profile:<user>  {user, customer, imsi, salt, iv, wrapped, highest}  K and OPc wrapped (AES-GCM) under
//                   a key derived from the password with PBKDF2; never stored or sent in the clear
//   last:<user>     the last meters, purchases (with their tokens) and history seen, for offline use
//   lastUser        the user who logged in last
'use strict';

const DB = 'concentrator-app';
const PBKDF2_ROUNDS = 210000;

function open() {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(DB, 1);
    r.onupgradeneeded = () => r.result.createObjectStore('kv');
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

export async function get(key) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const r = db.transaction('kv').objectStore('kv').get(key);
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

export async function put(key, value) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const t = db.transaction('kv', 'readwrite');
    t.objectStore('kv').put(value, key);
    t.oncomplete = () => resolve();
    t.onerror = () => reject(t.error);
  });
}

async function passwordKey(password, salt) {
  const base = await crypto.subtle.importKey(
    'raw', new TextEncoder().encode(password), 'PBKDF2', false, ['deriveKey']);
  return crypto.subtle.deriveKey(
    { name: 'PBKDF2', salt, iterations: PBKDF2_ROUNDS, hash: 'SHA-256' },
    base, { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
}

// Keeps K and OPc wrapped under the password.
export async function saveProfile(reg, password, highest = 0) {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const secret = new Uint8Array(32);
  secret.set(reg.k, 0);
  secret.set(reg.opc, 16);
  const key = await passwordKey(password, salt);
  const wrapped = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, key, secret));
  secret.fill(0);
  await put('profile:' + reg.user, {
    user: reg.user, customer: reg.customer, imsi: reg.imsi, salt, iv, wrapped, highest,
  });
  await put('lastUser', reg.user);
}

// K and OPc, or null when the password does not open them.
export async function unwrap(profile, password) {
  try {
    const key = await passwordKey(password, profile.salt);
    const secret = new Uint8Array(
      await crypto.subtle.decrypt({ name: 'AES-GCM', iv: profile.iv }, key, profile.wrapped));
    return { k: secret.slice(0, 16), opc: secret.slice(16, 32) };
  } catch (e) {
    return null;
  }
}
