//! Identities: the permanent key identity (KID) of a meter, and temporary identities (TIDs) that the
//! head-end issues after AKA and binds to that session.
//!
//! KID = the first 16 octets of HMAC-SHA-256(main key, label || 0x00 || IMSI || MSISDN || IMEI), each
//! identifier prefixed by its length in one octet, label = `concentrator/kid/v1`. The KID reveals none of
//! the three identifiers without the main key, and changes if any of them does.

use std::collections::HashMap;

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use rand::RngCore;
use thiserror::Error;

/// The domain label of KID derivation.
pub const KID_LABEL: &[u8] = b"concentrator/kid/v1";

/// A meter's permanent key identity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Kid(pub [u8; 16]);

/// A temporary identity issued by the head-end.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Tid(pub [u8; 8]);

/// Identity failures.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    /// An identifier with the wrong number of digits or a non-digit.
    #[error(
        "{what} {value:?} is not {digits} decimal digits; check the meter's SIM and label data"
    )]
    BadDigits {
        /// IMSI, MSISDN or IMEI.
        what: &'static str,
        /// As given.
        value: String,
        /// The allowed count.
        digits: &'static str,
    },
    /// The main key is too short to be a key.
    #[error("main key of {0} octets is too short: use at least 16 random octets")]
    WeakMainKey(usize),
    /// The HMAC computation failed.
    #[error("HMAC-SHA-256 failed: {0}")]
    Openssl(String),
}

fn digits(
    what: &'static str,
    value: &str,
    min: usize,
    max: usize,
    desc: &'static str,
) -> Result<(), IdentityError> {
    if value.len() < min || value.len() > max || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdentityError::BadDigits {
            what,
            value: value.to_string(),
            digits: desc,
        });
    }
    Ok(())
}

/// Derives a meter's KID from its IMSI (6-15 digits), MSISDN (1-15 digits), IMEI (14-16 digits, IMEI or
/// IMEISV) and the utility's main key.
pub fn derive_kid(
    main_key: &[u8],
    imsi: &str,
    msisdn: &str,
    imei: &str,
) -> Result<Kid, IdentityError> {
    if main_key.len() < 16 {
        return Err(IdentityError::WeakMainKey(main_key.len()));
    }
    digits("IMSI", imsi, 6, 15, "6 to 15")?;
    digits("MSISDN", msisdn, 1, 15, "1 to 15")?;
    digits("IMEI", imei, 14, 16, "14 to 16")?;
    let mut input = Vec::with_capacity(KID_LABEL.len() + 50);
    input.extend_from_slice(KID_LABEL);
    input.push(0);
    for id in [imsi, msisdn, imei] {
        input.push(id.len() as u8);
        input.extend_from_slice(id.as_bytes());
    }
    let mac = (|| {
        let key = PKey::hmac(main_key)?;
        let mut s = Signer::new(MessageDigest::sha256(), &key)?;
        s.update(&input)?;
        s.sign_to_vec()
    })()
    .map_err(|e| IdentityError::Openssl(e.to_string()))?;
    let mut kid = [0u8; 16];
    kid.copy_from_slice(&mac[..16]);
    Ok(Kid(kid))
}

/// What a TID stands for: the meter and the AKA session it was issued in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TidBinding {
    /// The meter.
    pub kid: Kid,
    /// The session: the RAND of the AKA run that established it.
    pub session: [u8; 16],
    /// Issue time, unix seconds.
    pub issued_at: u64,
    /// End of validity, unix seconds (normally the end of the keys' lifetime).
    pub expires_at: u64,
}

/// The head-end's table of issued TIDs (in memory; the caller persists it if needed).
#[derive(Debug, Default)]
pub struct TidTable {
    by_tid: HashMap<Tid, TidBinding>,
    by_kid: HashMap<Kid, Tid>,
}

impl TidTable {
    /// An empty table.
    pub fn new() -> Self {
        TidTable::default()
    }

    /// Issues a fresh random TID for `kid` bound to `session`, replacing the meter's previous TID.
    pub fn issue(
        &mut self,
        kid: Kid,
        session: [u8; 16],
        now: u64,
        lifetime_secs: u64,
        rng: &mut impl RngCore,
    ) -> Tid {
        if let Some(old) = self.by_kid.remove(&kid) {
            self.by_tid.remove(&old);
        }
        let tid = loop {
            let mut t = [0u8; 8];
            rng.fill_bytes(&mut t);
            if !self.by_tid.contains_key(&Tid(t)) {
                break Tid(t);
            }
        };
        let binding = TidBinding {
            kid,
            session,
            issued_at: now,
            expires_at: now.saturating_add(lifetime_secs),
        };
        self.by_tid.insert(tid, binding);
        self.by_kid.insert(kid, tid);
        tid
    }

    /// The binding of a TID that is still valid at `now`.
    pub fn resolve(&self, tid: &Tid, now: u64) -> Option<&TidBinding> {
        self.by_tid.get(tid).filter(|b| now < b.expires_at)
    }

    /// Forgets a meter's TID (for example when its session ends).
    pub fn revoke(&mut self, kid: &Kid) {
        if let Some(tid) = self.by_kid.remove(kid) {
            self.by_tid.remove(&tid);
        }
    }

    /// Drops expired bindings.
    pub fn purge(&mut self, now: u64) {
        self.by_tid.retain(|_, b| now < b.expires_at);
        let by_tid = &self.by_tid;
        self.by_kid.retain(|_, t| by_tid.contains_key(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_stable_and_depends_on_every_input() {
        let k = [7u8; 32];
        let a = derive_kid(&k, "262011234567890", "491701234567", "490154203237518").unwrap();
        assert_eq!(
            a,
            derive_kid(&k, "262011234567890", "491701234567", "490154203237518").unwrap()
        );
        assert_ne!(
            a,
            derive_kid(&k, "262011234567891", "491701234567", "490154203237518").unwrap()
        );
        assert_ne!(
            a,
            derive_kid(&k, "262011234567890", "491701234568", "490154203237518").unwrap()
        );
        assert_ne!(
            a,
            derive_kid(&k, "262011234567890", "491701234567", "490154203237519").unwrap()
        );
        assert_ne!(
            a,
            derive_kid(
                &[8u8; 32],
                "262011234567890",
                "491701234567",
                "490154203237518"
            )
            .unwrap()
        );
        // Length prefixes keep field boundaries: moving a digit between fields changes the KID.
        assert_ne!(
            derive_kid(&k, "1234567", "89", "12345678901234").unwrap(),
            derive_kid(&k, "123456", "789", "12345678901234").unwrap()
        );
        assert!(matches!(
            derive_kid(&k, "12a456", "1", "12345678901234"),
            Err(IdentityError::BadDigits { .. })
        ));
        assert_eq!(
            derive_kid(&[0; 8], "123456", "1", "12345678901234"),
            Err(IdentityError::WeakMainKey(8))
        );
    }

    #[test]
    fn tids_are_bound_and_expire() {
        let mut t = TidTable::new();
        let mut rng = rand::thread_rng();
        let kid = Kid([1; 16]);
        let tid = t.issue(kid, [9; 16], 100, 60, &mut rng);
        assert_eq!(t.resolve(&tid, 120).map(|b| b.kid), Some(kid));
        assert!(t.resolve(&tid, 160).is_none());
        let tid2 = t.issue(kid, [10; 16], 130, 60, &mut rng);
        assert!(t.resolve(&tid, 131).is_none(), "the old TID is replaced");
        assert_eq!(t.resolve(&tid2, 131).map(|b| b.session), Some([10; 16]));
        t.purge(1000);
        assert!(t.resolve(&tid2, 131).is_none());
    }
}
