//! Security mode: after AKA the two ends agree on an integrity and a ciphering algorithm, and hold CK/IK in
//! a [`SecurityContext`] whose lifetime is bounded; when it ends (or COUNT runs out) a fresh AKA replaces it.
//!
//! The algorithms are keyed as in UMTS: the ciphering algorithm with CK, the integrity algorithm with IK.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::bits::{Direction, LengthError};
use crate::eea2_eia2::{Eea2, Eia2};
use crate::uea1_uia1::{Uea1, Uia1};

/// Integrity algorithms, with their identifiers on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IntegrityAlg {
    /// UIA1 (KASUMI f9); wire id 1.
    Uia1,
    /// 128-EIA2 (AES-CMAC); wire id 2.
    Eia2,
}

/// Ciphering algorithms, with their identifiers on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CipherAlg {
    /// No ciphering (integrity only); wire id 0. Only if both ends allow it.
    Null,
    /// UEA1 (KASUMI f8); wire id 1.
    Uea1,
    /// 128-EEA2 (AES-CTR); wire id 2.
    Eea2,
}

impl IntegrityAlg {
    /// The wire identifier.
    pub fn id(self) -> u8 {
        match self {
            IntegrityAlg::Uia1 => 1,
            IntegrityAlg::Eia2 => 2,
        }
    }

    /// The algorithm for a wire identifier.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(IntegrityAlg::Uia1),
            2 => Some(IntegrityAlg::Eia2),
            _ => None,
        }
    }
}

impl CipherAlg {
    /// The wire identifier.
    pub fn id(self) -> u8 {
        match self {
            CipherAlg::Null => 0,
            CipherAlg::Uea1 => 1,
            CipherAlg::Eea2 => 2,
        }
    }

    /// The algorithm for a wire identifier.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(CipherAlg::Null),
            1 => Some(CipherAlg::Uea1),
            2 => Some(CipherAlg::Eea2),
            _ => None,
        }
    }
}

/// The pair of algorithms in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecurityMode {
    /// Integrity protection.
    pub integrity: IntegrityAlg,
    /// Ciphering.
    pub ciphering: CipherAlg,
}

impl SecurityMode {
    /// UIA1 with UEA1 (KASUMI).
    pub const KASUMI: SecurityMode = SecurityMode {
        integrity: IntegrityAlg::Uia1,
        ciphering: CipherAlg::Uea1,
    };
    /// 128-EIA2 with 128-EEA2 (AES).
    pub const AES: SecurityMode = SecurityMode {
        integrity: IntegrityAlg::Eia2,
        ciphering: CipherAlg::Eea2,
    };
}

/// Security-mode and context failures.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModeError {
    /// The two ends share no algorithm pair.
    #[error("no common security mode: we offer {ours:?}, the peer offers {theirs:?}; enable a shared pair (AES or KASUMI) on one side")]
    NoCommonMode {
        /// Our list.
        ours: Vec<SecurityMode>,
        /// The peer's list.
        theirs: Vec<SecurityMode>,
    },
    /// The keys' lifetime is over.
    #[error("CK/IK expired at {expired_at} (now {now}): run a fresh AKA to get new keys")]
    KeysExpired {
        /// When they expired (unix seconds).
        expired_at: u64,
        /// The time given.
        now: u64,
    },
    /// A length or bearer problem in the algorithm call.
    #[error(transparent)]
    Length(#[from] LengthError),
}

/// Picks the first mode in our preference order that the peer also supports.
pub fn negotiate(
    ours: &[SecurityMode],
    theirs: &[SecurityMode],
) -> Result<SecurityMode, ModeError> {
    ours.iter()
        .copied()
        .find(|m| theirs.contains(m))
        .ok_or_else(|| ModeError::NoCommonMode {
            ours: ours.to_vec(),
            theirs: theirs.to_vec(),
        })
}

#[derive(Debug, Clone)]
enum Integrity {
    Uia1(Box<Uia1>),
    Eia2(Box<Eia2>),
}

#[derive(Debug, Clone)]
enum Ciphering {
    Null,
    Uea1(Box<Uea1>),
    Eea2(Box<Eea2>),
}

/// CK/IK from one AKA run with the agreed mode, expanded for use, and their lifetime.
#[derive(Debug, Clone)]
pub struct SecurityContext {
    mode: SecurityMode,
    integrity: Integrity,
    ciphering: Ciphering,
    fresh: u32,
    established_at: u64,
    expires_at: u64,
}

impl SecurityContext {
    /// A context from CK and IK, valid from `now` for `lifetime_secs`. `fresh` is UIA1's FRESH (chosen by
    /// the server side and sent with the security-mode command; unused by EIA2).
    pub fn new(
        mode: SecurityMode,
        ck: &[u8; 16],
        ik: &[u8; 16],
        fresh: u32,
        now: u64,
        lifetime_secs: u64,
    ) -> Self {
        let integrity = match mode.integrity {
            IntegrityAlg::Uia1 => Integrity::Uia1(Box::new(Uia1::new(ik))),
            IntegrityAlg::Eia2 => Integrity::Eia2(Box::new(Eia2::new(ik))),
        };
        let ciphering = match mode.ciphering {
            CipherAlg::Null => Ciphering::Null,
            CipherAlg::Uea1 => Ciphering::Uea1(Box::new(Uea1::new(ck))),
            CipherAlg::Eea2 => Ciphering::Eea2(Box::new(Eea2::new(ck))),
        };
        SecurityContext {
            mode,
            integrity,
            ciphering,
            fresh,
            established_at: now,
            expires_at: now.saturating_add(lifetime_secs),
        }
    }

    /// The algorithms in force.
    pub fn mode(&self) -> SecurityMode {
        self.mode
    }

    /// When the keys were established (unix seconds).
    pub fn established_at(&self) -> u64 {
        self.established_at
    }

    /// When the keys stop being usable (unix seconds).
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// Fails with [`ModeError::KeysExpired`] once the lifetime is over.
    pub fn check_alive(&self, now: u64) -> Result<(), ModeError> {
        if now >= self.expires_at {
            return Err(ModeError::KeysExpired {
                expired_at: self.expires_at,
                now,
            });
        }
        Ok(())
    }

    /// Ciphers or deciphers the whole of `buf` in place.
    pub fn cipher(
        &self,
        count: u32,
        bearer: u8,
        direction: Direction,
        buf: &mut [u8],
    ) -> Result<(), ModeError> {
        let bits = buf.len() * 8;
        match &self.ciphering {
            Ciphering::Null => Ok(()),
            Ciphering::Uea1(c) => Ok(c.apply(count, bearer, direction, buf, bits)?),
            Ciphering::Eea2(c) => Ok(c.apply(count, bearer, direction, buf, bits)?),
        }
    }

    /// MAC-I over the whole of `message`.
    pub fn mac(
        &self,
        count: u32,
        bearer: u8,
        direction: Direction,
        message: &[u8],
    ) -> Result<[u8; 4], ModeError> {
        let bits = message.len() * 8;
        match &self.integrity {
            Integrity::Uia1(m) => Ok(m.mac(
                count,
                self.fresh ^ u32::from(bearer),
                direction,
                message,
                bits,
            )?),
            Integrity::Eia2(m) => Ok(m.mac(count, bearer, direction, message, bits)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_our_preference() {
        let both = [SecurityMode::AES, SecurityMode::KASUMI];
        assert_eq!(
            negotiate(&both, &[SecurityMode::KASUMI, SecurityMode::AES]),
            Ok(SecurityMode::AES)
        );
        assert_eq!(
            negotiate(&both, &[SecurityMode::KASUMI]),
            Ok(SecurityMode::KASUMI)
        );
        assert!(matches!(
            negotiate(&[SecurityMode::AES], &[SecurityMode::KASUMI]),
            Err(ModeError::NoCommonMode { .. })
        ));
    }

    #[test]
    fn keys_expire() {
        let ctx = SecurityContext::new(SecurityMode::AES, &[1; 16], &[2; 16], 0, 100, 50);
        assert!(ctx.check_alive(149).is_ok());
        assert_eq!(
            ctx.check_alive(150),
            Err(ModeError::KeysExpired {
                expired_at: 150,
                now: 150
            })
        );
        for id in 0..4 {
            assert_eq!(
                IntegrityAlg::from_id(id)
                    .map(IntegrityAlg::id)
                    .unwrap_or(id),
                id
            );
            assert_eq!(CipherAlg::from_id(id).map(CipherAlg::id).unwrap_or(id), id);
        }
    }
}
