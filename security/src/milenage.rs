//! Milenage (TS 35.206): the 3GPP authentication and key-generation functions f1, f1*, f2, f3, f4, f5 and
//! f5*, with OPc derived from the operator variant OP, and the AUTN and AUTS fields built from them
//! (TS 33.102 6.3).
//!
//! A [`Milenage`] holds one subscriber's expanded key K and OPc. [`Milenage::compute`] runs every function
//! for one RAND in two AES calls: TEMP = E_K(RAND xor OPc), then the five output blocks together, which the
//! CPU pipelines.

use crate::aes128::{xor_into, Aes128Key, Block};

/// The constants c1..c5 differ only in their last octet (TS 35.206 4.1).
const C_LAST: [u8; 5] = [0x00, 0x01, 0x02, 0x04, 0x08];
/// The rotations r1..r5, in octets (64, 0, 32, 64, 96 bits).
const R_BYTES: [usize; 5] = [8, 0, 4, 8, 12];

/// Everything Milenage computes for one RAND, SQN and AMF. Its keys are wiped when it is dropped and
/// never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct MilenageOutput {
    /// f1: the network authentication code MAC-A.
    pub mac_a: [u8; 8],
    /// f1*: the resynchronisation authentication code MAC-S (computed with the same AMF).
    pub mac_s: [u8; 8],
    /// f2: the response RES (and expected response XRES).
    pub res: [u8; 8],
    /// f3: the cipher key CK.
    pub ck: [u8; 16],
    /// f4: the integrity key IK.
    pub ik: [u8; 16],
    /// f5: the anonymity key AK.
    pub ak: [u8; 6],
    /// f5*: the resynchronisation anonymity key AK*.
    pub ak_star: [u8; 6],
}

impl std::fmt::Debug for MilenageOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MilenageOutput(..)")
    }
}

impl Drop for MilenageOutput {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.res.zeroize();
        self.ck.zeroize();
        self.ik.zeroize();
        self.ak.zeroize();
        self.mac_a.zeroize();
        self.mac_s.zeroize();
    }
}

impl MilenageOutput {
    /// AUTN = (SQN xor AK) || AMF || MAC-A.
    pub fn autn(&self, sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 16] {
        let mut autn = [0u8; 16];
        for i in 0..6 {
            autn[i] = sqn[i] ^ self.ak[i];
        }
        autn[6..8].copy_from_slice(amf);
        autn[8..].copy_from_slice(&self.mac_a);
        autn
    }
}

/// One subscriber's Milenage instance: the expanded K and OPc.
#[derive(Clone)]
pub struct Milenage {
    key: Aes128Key,
    opc: [u8; 16],
}

impl std::fmt::Debug for Milenage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Milenage(..)")
    }
}

/// K's schedule is wiped by `aes` itself (its `zeroize` feature); OPc here.
impl Drop for Milenage {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.opc);
    }
}

/// OPc = E_K(OP) xor OP.
pub fn opc_from_op(k: &[u8; 16], op: &[u8; 16]) -> [u8; 16] {
    let mut opc = *op;
    Aes128Key::new(k).encrypt(&mut opc);
    xor_into(&mut opc, op);
    opc
}

impl Milenage {
    /// A subscriber known by K and OPc (what a USIM or our meter store holds).
    pub fn with_opc(k: &[u8; 16], opc: &[u8; 16]) -> Self {
        Milenage {
            key: Aes128Key::new(k),
            opc: *opc,
        }
    }

    /// A subscriber known by K and the operator's OP; OPc is computed once here.
    pub fn with_op(k: &[u8; 16], op: &[u8; 16]) -> Self {
        let key = Aes128Key::new(k);
        let mut opc = *op;
        key.encrypt(&mut opc);
        xor_into(&mut opc, op);
        Milenage { key, opc }
    }

    /// The OPc in use.
    pub fn opc(&self) -> [u8; 16] {
        self.opc
    }

    /// TEMP = E_K(RAND xor OPc).
    #[inline]
    fn temp(&self, rand: &[u8; 16]) -> Block {
        let mut t = *rand;
        xor_into(&mut t, &self.opc);
        self.key.encrypt(&mut t);
        t
    }

    /// The input block of output i (0-based) before encryption: rot(x xor OPc, r_i) xor c_i (xor TEMP for f1).
    #[inline]
    fn input_block(&self, i: usize, temp: &Block, in1: &Block) -> Block {
        let opc = u128::from_be_bytes(self.opc);
        let temp = u128::from_be_bytes(*temp);
        let x = if i == 0 {
            u128::from_be_bytes(*in1)
        } else {
            temp
        } ^ opc;
        let mut b = x.rotate_left(8 * R_BYTES[i] as u32) ^ u128::from(C_LAST[i]);
        if i == 0 {
            b ^= temp;
        }
        b.to_be_bytes()
    }

    fn output(&self, blocks: &[Block]) -> MilenageOutput {
        let opc = u128::from_be_bytes(self.opc);
        let out = |i: usize| (u128::from_be_bytes(blocks[i]) ^ opc).to_be_bytes();
        let (out1, out2, out5) = (out(0), out(1), out(4));
        let mut o = MilenageOutput {
            mac_a: [0; 8],
            mac_s: [0; 8],
            res: [0; 8],
            ck: out(2),
            ik: out(3),
            ak: [0; 6],
            ak_star: [0; 6],
        };
        o.mac_a.copy_from_slice(&out1[..8]);
        o.mac_s.copy_from_slice(&out1[8..]);
        o.res.copy_from_slice(&out2[8..]);
        o.ak.copy_from_slice(&out2[..6]);
        o.ak_star.copy_from_slice(&out5[..6]);
        o
    }

    /// Runs f1, f1*, f2, f3, f4, f5 and f5* for one RAND, SQN and AMF.
    pub fn compute(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> MilenageOutput {
        let temp = self.temp(rand);
        let in1 = in1_block(sqn, amf);
        let mut blocks: [Block; 5] = core::array::from_fn(|i| self.input_block(i, &temp, &in1));
        self.key.encrypt_n(&mut blocks);
        self.output(&blocks)
    }

    /// [`Milenage::compute`] for many (RAND, SQN) pairs with one AMF, eight at a time so that the AES
    /// hardware pipelines every call (the head-end generates vectors in batches).
    pub fn compute_many(
        &self,
        inputs: &[([u8; 16], [u8; 6])],
        amf: &[u8; 2],
    ) -> Vec<MilenageOutput> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(8) {
            let mut temps: [Block; 8] = [[0; 16]; 8];
            for (t, (rand, _)) in temps.iter_mut().zip(chunk) {
                *t = (u128::from_be_bytes(*rand) ^ u128::from_be_bytes(self.opc)).to_be_bytes();
            }
            self.key.encrypt_n(&mut temps);
            let mut blocks: [[Block; 8]; 5] = [[[0; 16]; 8]; 5];
            for (v, (_, sqn)) in chunk.iter().enumerate() {
                let in1 = in1_block(sqn, amf);
                for (i, row) in blocks.iter_mut().enumerate() {
                    row[v] = self.input_block(i, &temps[v], &in1);
                }
            }
            for row in blocks.iter_mut() {
                self.key.encrypt_n(row);
            }
            #[allow(clippy::needless_range_loop)] // v indexes the second dimension of `blocks`
            for v in 0..chunk.len() {
                let per: [Block; 5] = core::array::from_fn(|i| blocks[i][v]);
                out.push(self.output(&per));
            }
        }
        out
    }

    /// f1 and f1*: (MAC-A, MAC-S) for SQN and AMF.
    pub fn f1(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> ([u8; 8], [u8; 8]) {
        let temp = self.temp(rand);
        let mut b = self.input_block(0, &temp, &in1_block(sqn, amf));
        self.key.encrypt(&mut b);
        xor_into(&mut b, &self.opc);
        let mut mac_a = [0; 8];
        let mut mac_s = [0; 8];
        mac_a.copy_from_slice(&b[..8]);
        mac_s.copy_from_slice(&b[8..]);
        (mac_a, mac_s)
    }

    /// f5*: AK* for RAND, which hides SQN_MS in AUTS.
    pub fn f5_star(&self, rand: &[u8; 16]) -> [u8; 6] {
        let temp = self.temp(rand);
        let mut b = self.input_block(4, &temp, &[0; 16]);
        self.key.encrypt(&mut b);
        xor_into(&mut b, &self.opc);
        let mut ak = [0; 6];
        ak.copy_from_slice(&b[..6]);
        ak
    }

    /// f5: AK for RAND, which the meter side needs to read SQN out of AUTN before anything else.
    pub fn f5(&self, rand: &[u8; 16]) -> [u8; 6] {
        let temp = self.temp(rand);
        let mut b = self.input_block(1, &temp, &[0; 16]);
        self.key.encrypt(&mut b);
        xor_into(&mut b, &self.opc);
        let mut ak = [0; 6];
        ak.copy_from_slice(&b[..6]);
        ak
    }

    /// AUTS = (SQN_MS xor AK*) || MAC-S, where MAC-S = f1*(SQN_MS || RAND || AMF*) with the dummy AMF* = 0000
    /// (TS 33.102 6.3.3).
    pub fn auts(&self, rand: &[u8; 16], sqn_ms: &[u8; 6]) -> [u8; 14] {
        self.auts_with_amf(rand, sqn_ms, &[0, 0])
    }

    /// AUTS with an explicit AMF* (the specification fixes it to 0000; test tools let it be chosen).
    pub fn auts_with_amf(&self, rand: &[u8; 16], sqn_ms: &[u8; 6], amf: &[u8; 2]) -> [u8; 14] {
        let ak_star = self.f5_star(rand);
        let (_, mac_s) = self.f1(rand, sqn_ms, amf);
        let mut auts = [0u8; 14];
        for i in 0..6 {
            auts[i] = sqn_ms[i] ^ ak_star[i];
        }
        auts[6..].copy_from_slice(&mac_s);
        auts
    }

    /// Server side of resynchronisation: recovers SQN_MS from AUTS and checks MAC-S (with AMF* = 0000).
    /// Returns `None` when MAC-S does not match: the AUTS was not made by this subscriber's key for RAND.
    pub fn verify_auts(&self, rand: &[u8; 16], auts: &[u8; 14]) -> Option<[u8; 6]> {
        let ak_star = self.f5_star(rand);
        let mut sqn_ms = [0u8; 6];
        for i in 0..6 {
            sqn_ms[i] = auts[i] ^ ak_star[i];
        }
        let (_, mac_s) = self.f1(rand, &sqn_ms, &[0, 0]);
        if openssl::memcmp::eq(&mac_s, &auts[6..]) {
            Some(sqn_ms)
        } else {
            None
        }
    }
}

/// IN1 = SQN || AMF || SQN || AMF.
#[inline]
fn in1_block(sqn: &[u8; 6], amf: &[u8; 2]) -> Block {
    let mut in1 = [0u8; 16];
    in1[..6].copy_from_slice(sqn);
    in1[6..8].copy_from_slice(amf);
    in1[8..14].copy_from_slice(sqn);
    in1[14..].copy_from_slice(amf);
    in1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_equals_single() {
        let m = Milenage::with_op(&[5; 16], &[6; 16]);
        let inputs: Vec<([u8; 16], [u8; 6])> =
            (0..19u8).map(|i| ([i; 16], [0, 0, 0, 0, i, 1])).collect();
        let many = m.compute_many(&inputs, &[0x80, 0]);
        assert_eq!(many.len(), inputs.len());
        for ((rand, sqn), o) in inputs.iter().zip(&many) {
            assert_eq!(&m.compute(rand, sqn, &[0x80, 0]), o);
        }
    }
}
