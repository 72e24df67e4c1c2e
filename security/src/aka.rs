//! Both ends of an AKA run (TS 33.102 6.3): the server side makes authentication vectors and handles
//! resynchronisation; the meter side (the gateway, on the meter's behalf) checks AUTN — MAC first, then
//! SQN freshness — and answers with RES or with AUTS.

use thiserror::Error;

use crate::milenage::Milenage;
use crate::sqn::{Sqn, SqnError, SqnGenError, SqnGenerator, SqnWindow};

/// An authentication vector: what the server side sends (RAND, AUTN) and keeps (XRES, CK, IK). XRES, CK
/// and IK are wiped when it is dropped and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthVector {
    /// The challenge.
    pub rand: [u8; 16],
    /// The expected response.
    pub xres: [u8; 8],
    /// The cipher key.
    pub ck: [u8; 16],
    /// The integrity key.
    pub ik: [u8; 16],
    /// The authentication token.
    pub autn: [u8; 16],
    /// The SQN inside AUTN.
    pub sqn: Sqn,
}

/// The meter side's answer to a challenge whose MAC-A verified. RES, CK and IK are wiped when it is
/// dropped and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub enum AkaResponse {
    /// SQN was fresh: send RES, use CK and IK.
    Authenticated {
        /// The response to send.
        res: [u8; 8],
        /// The cipher key.
        ck: [u8; 16],
        /// The integrity key.
        ik: [u8; 16],
    },
    /// SQN was not fresh: send AUTS so the server can resynchronise, then expect a new challenge.
    SyncFailure {
        /// Why SQN was refused.
        reason: SqnError,
        /// The resynchronisation token.
        auts: [u8; 14],
    },
}

impl std::fmt::Debug for AuthVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthVector")
            .field("rand", &self.rand)
            .field("autn", &self.autn)
            .field("sqn", &self.sqn)
            .finish_non_exhaustive()
    }
}

impl Drop for AuthVector {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.xres.zeroize();
        self.ck.zeroize();
        self.ik.zeroize();
    }
}

impl std::fmt::Debug for AkaResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AkaResponse::Authenticated { .. } => f.write_str("Authenticated(..)"),
            AkaResponse::SyncFailure { reason, auts } => f
                .debug_struct("SyncFailure")
                .field("reason", reason)
                .field("auts", auts)
                .finish(),
        }
    }
}

impl Drop for AkaResponse {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let AkaResponse::Authenticated { res, ck, ik } = self {
            res.zeroize();
            ck.zeroize();
            ik.zeroize();
        }
    }
}

/// An AKA failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AkaError {
    /// MAC-A in AUTN is wrong: the challenge was not made with this meter's key. Nothing changed;
    /// report an authentication failure to the server and do not trust this peer.
    #[error(
        "MAC-A does not verify: the challenge was not made with this meter's key (or was altered)"
    )]
    MacFailure,
    /// MAC-S in AUTS is wrong: the resynchronisation request did not come from this subscriber.
    #[error("MAC-S in AUTS does not verify: the resynchronisation was not made with this subscriber's key for this RAND")]
    BadAuts,
    /// RES does not equal XRES: the meter side does not hold the key.
    #[error("RES does not match XRES: the meter side does not hold the subscriber key")]
    ResMismatch,
    /// The server side cannot produce a fresh SQN.
    #[error(transparent)]
    Sqn(#[from] SqnGenError),
}

/// Server side: a new vector for one subscriber with a fresh SQN and the caller's random RAND.
pub fn generate_vector(
    m: &Milenage,
    sqns: &mut SqnGenerator,
    rand: [u8; 16],
    amf: [u8; 2],
) -> Result<AuthVector, AkaError> {
    let sqn = sqns.next_sqn()?;
    let sqn_bytes = sqn.to_bytes();
    let o = m.compute(&rand, &sqn_bytes, &amf);
    Ok(AuthVector {
        rand,
        xres: o.res,
        ck: o.ck,
        ik: o.ik,
        autn: o.autn(&sqn_bytes, &amf),
        sqn,
    })
}

/// Server side: compares the meter's RES with XRES in constant time.
pub fn check_res(vector: &AuthVector, res: &[u8]) -> Result<(), AkaError> {
    if res.len() == vector.xres.len() && openssl::memcmp::eq(res, &vector.xres) {
        Ok(())
    } else {
        Err(AkaError::ResMismatch)
    }
}

/// Server side: verifies AUTS for the RAND it sent and moves the subscriber's SQN above SQN_MS.
pub fn resynchronise(
    m: &Milenage,
    sqns: &mut SqnGenerator,
    rand: &[u8; 16],
    auts: &[u8; 14],
) -> Result<Sqn, AkaError> {
    let sqn_ms = Sqn::from_bytes(&m.verify_auts(rand, auts).ok_or(AkaError::BadAuts)?);
    sqns.resync(sqn_ms);
    Ok(sqn_ms)
}

/// Meter side: answers a challenge. MAC-A is checked before SQN, so a forged AUTN changes nothing and
/// never triggers a resynchronisation; a fresh SQN is recorded in `window`.
pub fn respond(
    m: &Milenage,
    window: &mut SqnWindow,
    rand: &[u8; 16],
    autn: &[u8; 16],
) -> Result<AkaResponse, AkaError> {
    let o_ak = m.f5(rand);
    let mut sqn = [0u8; 6];
    for i in 0..6 {
        sqn[i] = autn[i] ^ o_ak[i];
    }
    let amf = [autn[6], autn[7]];
    let o = m.compute(rand, &sqn, &amf);
    if !openssl::memcmp::eq(&o.mac_a, &autn[8..]) {
        return Err(AkaError::MacFailure);
    }
    match window.accept(Sqn::from_bytes(&sqn)) {
        Ok(()) => Ok(AkaResponse::Authenticated {
            res: o.res,
            ck: o.ck,
            ik: o.ik,
        }),
        Err(reason) => Ok(AkaResponse::SyncFailure {
            reason,
            auts: m.auts(rand, &window.sqn_ms().to_bytes()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Milenage {
        Milenage::with_op(&[0x11; 16], &[0x22; 16])
    }

    #[test]
    fn full_run_with_replay_and_resync() {
        let m = pair();
        let mut server = SqnGenerator::new();
        let mut meter = SqnWindow::default();
        let v = generate_vector(&m, &mut server, [1; 16], [0x80, 0]).unwrap();
        let AkaResponse::Authenticated { res, ck, ik } =
            respond(&m, &mut meter, &v.rand, &v.autn).unwrap()
        else {
            panic!("first challenge must authenticate")
        };
        check_res(&v, &res).unwrap();
        assert_eq!((ck, ik), (v.ck, v.ik));

        // Replaying the same challenge is a sync failure with AUTS.
        let AkaResponse::SyncFailure { auts, reason } =
            respond(&m, &mut meter, &v.rand, &v.autn).unwrap()
        else {
            panic!("replay must fail")
        };
        assert!(matches!(reason, SqnError::Replay { .. }));
        // A server that lost its state resynchronises from AUTS and the next vector works.
        let mut fresh_server = SqnGenerator::new();
        let sqn_ms = resynchronise(&m, &mut fresh_server, &v.rand, &auts).unwrap();
        assert_eq!(sqn_ms, v.sqn);
        let v2 = generate_vector(&m, &mut fresh_server, [2; 16], [0x80, 0]).unwrap();
        assert!(matches!(
            respond(&m, &mut meter, &v2.rand, &v2.autn),
            Ok(AkaResponse::Authenticated { .. })
        ));
    }

    #[test]
    fn mac_is_checked_before_sqn() {
        let m = pair();
        let mut server = SqnGenerator::new();
        let mut meter = SqnWindow::default();
        let v = generate_vector(&m, &mut server, [1; 16], [0, 0]).unwrap();
        respond(&m, &mut meter, &v.rand, &v.autn).unwrap();
        let before = meter.clone();
        // A replayed AUTN with a broken MAC is a MAC failure, not a sync failure, and changes nothing.
        let mut bad = v.autn;
        bad[15] ^= 1;
        assert_eq!(
            respond(&m, &mut meter, &v.rand, &bad),
            Err(AkaError::MacFailure)
        );
        // A fresh-looking SQN with a bad MAC is not recorded either.
        let v2 = generate_vector(&m, &mut server, [3; 16], [0, 0]).unwrap();
        let mut bad2 = v2.autn;
        bad2[9] ^= 0x40;
        assert_eq!(
            respond(&m, &mut meter, &v2.rand, &bad2),
            Err(AkaError::MacFailure)
        );
        assert_eq!(meter, before);
        assert_eq!(check_res(&v, &[0; 8]), Err(AkaError::ResMismatch));
        assert_eq!(
            resynchronise(&m, &mut server, &v.rand, &[0; 14]),
            Err(AkaError::BadAuts)
        );
    }
}
