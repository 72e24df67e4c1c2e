// Milenage (3GPP TS 35.206) and the phone's side of AKA (TS 33.102 6.3), with WebCrypto's AES.
// AES-128 on one block: AES-CBC with a zero IV over that block; the first 16 output octets are the
// block cipher's output (the rest is the padding block).
'use strict';

const ZERO_IV = new Uint8Array(16);

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function unhex(text) {
  if (typeof text !== 'string' || text.length % 2 || /[^0-9a-fA-F]/.test(text)) {
    throw new Error('not hex: ' + String(text).slice(0, 40));
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(2 * i, 2), 16);
  return out;
}

function xor(a, b) {
  const out = new Uint8Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i];
  return out;
}

// Cyclic rotation left by r bits (r a multiple of 8).
function rot(x, r) {
  const n = r / 8;
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = x[(i + n) % 16];
  return out;
}

function constant(lastByte) {
  const c = new Uint8Array(16);
  c[15] = lastByte;
  return c;
}

// A Milenage instance for one subscriber's K and OPc.
export class Milenage {
  static async withOpc(k, opc) {
    const m = new Milenage();
    m.key = await crypto.subtle.importKey('raw', k, { name: 'AES-CBC' }, false, ['encrypt']);
    m.opc = Uint8Array.from(opc);
    return m;
  }

  // OPc = E_K(OP) xor OP.
  static async withOp(k, op) {
    const m = await Milenage.withOpc(k, new Uint8Array(16));
    m.opc = xor(await m.aes(op), op);
    return m;
  }

  async aes(block) {
    const out = await crypto.subtle.encrypt({ name: 'AES-CBC', iv: ZERO_IV }, this.key, block);
    return new Uint8Array(out, 0, 16).slice();
  }

  async temp(rand) {
    return this.aes(xor(rand, this.opc));
  }

  // OUT_n = E_K(rot(TEMP xor OPc, r) xor c) xor OPc, n = 2..5.
  async out(temp, r, c) {
    return xor(await this.aes(xor(rot(xor(temp, this.opc), r), constant(c))), this.opc);
  }

  // f1 and f1*: [MAC-A, MAC-S].
  async f1(rand, sqn, amf) {
    const temp = await this.temp(rand);
    const in1 = new Uint8Array(16);
    in1.set(sqn, 0); in1.set(amf, 6); in1.set(sqn, 8); in1.set(amf, 14);
    const out1 = xor(await this.aes(xor(temp, rot(xor(in1, this.opc), 64))), this.opc);
    return [out1.slice(0, 8), out1.slice(8, 16)];
  }

  // f2 (RES), f3 (CK), f4 (IK), f5 (AK), f5* (AK*).
  async f2345(rand) {
    const temp = await this.temp(rand);
    const out2 = await this.out(temp, 0, 1);
    return {
      res: out2.slice(8, 16),
      ak: out2.slice(0, 6),
      ck: await this.out(temp, 32, 2),
      ik: await this.out(temp, 64, 4),
      akStar: (await this.out(temp, 96, 8)).slice(0, 6),
    };
  }
}

function sqnNumber(sqn) {
  let n = 0;
  for (const b of sqn) n = n * 256 + b;
  return n;
}

function sqnBytes(n) {
  const out = new Uint8Array(6);
  for (let i = 5; i >= 0; i--) { out[i] = n % 256; n = Math.floor(n / 256); }
  return out;
}

// The phone's answer to (RAND, AUTN). `highest`: the highest SQN accepted before (a number).
// Returns {kind: 'ok', res, sqn} | {kind: 'sync', auts} | {kind: 'mac'} (the server is not the utility's).
export async function respond(m, rand, autn, highest) {
  const f = await m.f2345(rand);
  const sqn = xor(autn.slice(0, 6), f.ak);
  const amf = autn.slice(6, 8);
  const [macA] = await m.f1(rand, sqn, amf);
  let same = 0;
  for (let i = 0; i < 8; i++) same |= macA[i] ^ autn[8 + i];
  if (same !== 0) return { kind: 'mac' };
  const n = sqnNumber(sqn);
  if (n <= highest) {
    const ms = sqnBytes(highest);
    const [, macS] = await m.f1(rand, ms, new Uint8Array(2));
    const auts = new Uint8Array(14);
    auts.set(xor(ms, f.akStar), 0);
    auts.set(macS, 6);
    return { kind: 'sync', auts };
  }
  return { kind: 'ok', res: f.res, sqn: n, ck: f.ck, ik: f.ik };
}
