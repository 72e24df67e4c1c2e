//! A throwaway utility PKI made at test time: a CA, a head-end, a gateway, and a rogue CA with its own
//! head-end. No private key is committed anywhere.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

/// The reference "now" of the tests (unix seconds, in 2027).
pub const NOW: u64 = 1_800_000_000;

/// A new P-256 key.
pub fn p256_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A certificate for `key` with CN and OU, signed by `issuer` (or self-signed), valid `from..until`.
pub fn cert(
    cn: &str,
    ou: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    is_ca: bool,
    from: u64,
    until: u64,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Test Utility")
        .unwrap();
    name.append_entry_by_nid(Nid::ORGANIZATIONALUNITNAME, ou)
        .unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(rand::random::<u32>() >> 1).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&serial).unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    match issuer {
        Some((c, _)) => b.set_issuer_name(c.subject_name()).unwrap(),
        None => b.set_issuer_name(&name).unwrap(),
    }
    b.set_pubkey(key).unwrap();
    // `time_t` is 32 bits on armhf: the test times (around 2026) fit, a cast to i64 would not compile.
    b.set_not_before(&Asn1Time::from_unix(from.try_into().expect("time fits time_t")).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(until.try_into().expect("time fits time_t")).unwrap())
        .unwrap();
    if is_ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
    } else {
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
    }
    let signing_key = issuer.map_or(key, |(_, k)| k);
    b.sign(signing_key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// The test PKI.
pub struct TestPki {
    pub ca: X509,
    pub ca_key: PKey<Private>,
    pub head_end: X509,
    pub head_end_key: PKey<Private>,
    pub gateway: X509,
    pub gateway_key: PKey<Private>,
    pub rogue_ca: X509,
    pub rogue_head_end: X509,
    pub rogue_head_end_key: PKey<Private>,
}

impl TestPki {
    pub fn new() -> Self {
        let (from, until) = (NOW - 86_400, NOW + 365 * 86_400);
        let ca_key = p256_key();
        let ca = cert(
            "Test Utility Root CA",
            "ca",
            &ca_key,
            None,
            true,
            from,
            until,
        );
        let head_end_key = p256_key();
        let head_end = cert(
            "head-end-1",
            "head-end",
            &head_end_key,
            Some((&ca, &ca_key)),
            false,
            from,
            until,
        );
        let gateway_key = p256_key();
        let gateway = cert(
            "gw-0001",
            "gateway",
            &gateway_key,
            Some((&ca, &ca_key)),
            false,
            from,
            until,
        );
        let rogue_key = p256_key();
        let rogue_ca = cert("Rogue CA", "ca", &rogue_key, None, true, from, until);
        let rogue_head_end_key = p256_key();
        let rogue_head_end = cert(
            "evil-head-end",
            "head-end",
            &rogue_head_end_key,
            Some((&rogue_ca, &rogue_key)),
            false,
            from,
            until,
        );
        TestPki {
            ca,
            ca_key,
            head_end,
            head_end_key,
            gateway,
            gateway_key,
            rogue_ca,
            rogue_head_end,
            rogue_head_end_key,
        }
    }
}
