//! Test and soak support: a throwaway utility PKI generated at run time (a CA, a head-end key that signs
//! tokens, a gateway key that signs receipts, and an untrusted CA with its own head-end), simulated
//! meters whose registers advance with time, and the checks a kill -9 harness makes after every kill
//! ([`check_after_crash`]). Used by the tests, both kill -9 harnesses (the ledger's soak child and
//! `concentratord` itself), the benchmarks, the doc examples and `concentrator demo`; no private key is
//! ever committed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use concentrator_security::signed::DocumentSigner;
use concentrator_security::{CreditToken, TokenSigner, TokenVerifier};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

/// A failure while making or loading test keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("test PKI: {0}")]
pub struct TestKitError(pub String);

fn e<E: std::fmt::Display>(err: E) -> TestKitError {
    TestKitError(err.to_string())
}

/// Certificates are valid from 2000 to 2039. Written as ASN.1 times, not Unix seconds: the end lies
/// beyond a 32-bit `time_t`, which is what `Asn1Time::from_unix` takes on armhf.
const VALID_FROM: &str = "20000101000000Z"; // 946 684 800
const VALID_UNTIL: &str = "20390918230640Z"; // 2 200 000 000

fn p256() -> Result<PKey<Private>, TestKitError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(e)?;
    PKey::from_ec_key(EcKey::generate(&group).map_err(e)?).map_err(e)
}

fn certificate(
    cn: &str,
    ou: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    serial: u32,
) -> Result<X509, TestKitError> {
    let mut name = X509NameBuilder::new().map_err(e)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Ledger Test Utility")
        .map_err(e)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONALUNITNAME, ou)
        .map_err(e)?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn).map_err(e)?;
    let name = name.build();
    let mut b = X509Builder::new().map_err(e)?;
    b.set_version(2).map_err(e)?;
    let serial = BigNum::from_u32(serial).map_err(e)?;
    let serial = Asn1Integer::from_bn(&serial).map_err(e)?;
    b.set_serial_number(&serial).map_err(e)?;
    b.set_subject_name(&name).map_err(e)?;
    match issuer {
        Some((c, _)) => b.set_issuer_name(c.subject_name()).map_err(e)?,
        None => b.set_issuer_name(&name).map_err(e)?,
    }
    b.set_pubkey(key).map_err(e)?;
    let (from, until) = (
        Asn1Time::from_str(VALID_FROM).map_err(e)?,
        Asn1Time::from_str(VALID_UNTIL).map_err(e)?,
    );
    b.set_not_before(&from).map_err(e)?;
    b.set_not_after(&until).map_err(e)?;
    let is_ca = issuer.is_none();
    let mut bc = BasicConstraints::new();
    bc.critical();
    let mut ku = KeyUsage::new();
    ku.critical();
    if is_ca {
        bc.ca();
        ku.key_cert_sign().crl_sign();
    } else {
        ku.digital_signature();
    }
    b.append_extension(bc.build().map_err(e)?).map_err(e)?;
    b.append_extension(ku.build().map_err(e)?).map_err(e)?;
    b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256())
        .map_err(e)?;
    Ok(b.build())
}

/// The throwaway PKI.
pub struct TestPki {
    /// The utility CA (trusted).
    pub ca: X509,
    /// The head-end's certificate and key.
    pub head_end: (X509, PKey<Private>),
    /// The gateway's certificate and key.
    pub gateway: (X509, PKey<Private>),
    /// An untrusted CA's head-end certificate and key.
    pub rogue_head_end: (X509, PKey<Private>),
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestPki")
    }
}

const FILES: [&str; 7] = [
    "ca.pem",
    "head-end.pem",
    "head-end.key",
    "gateway.pem",
    "gateway.key",
    "rogue-head-end.pem",
    "rogue-head-end.key",
];

impl TestPki {
    /// Generates fresh keys and certificates.
    pub fn generate() -> Result<TestPki, TestKitError> {
        let ca_key = p256()?;
        let ca = certificate("Ledger Test Root CA", "ca", &ca_key, None, 1)?;
        let he_key = p256()?;
        let he = certificate("head-end", "head-end", &he_key, Some((&ca, &ca_key)), 2)?;
        let gw_key = p256()?;
        let gw = certificate("gw-test", "gateway", &gw_key, Some((&ca, &ca_key)), 3)?;
        let rogue_ca_key = p256()?;
        let rogue_ca = certificate("Rogue CA", "ca", &rogue_ca_key, None, 4)?;
        let rogue_key = p256()?;
        let rogue = certificate(
            "head-end",
            "head-end",
            &rogue_key,
            Some((&rogue_ca, &rogue_ca_key)),
            5,
        )?;
        Ok(TestPki {
            ca,
            head_end: (he, he_key),
            gateway: (gw, gw_key),
            rogue_head_end: (rogue, rogue_key),
        })
    }

    /// Writes the PEM files into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TestKitError> {
        let pems = [
            self.ca.to_pem().map_err(e)?,
            self.head_end.0.to_pem().map_err(e)?,
            self.head_end.1.private_key_to_pem_pkcs8().map_err(e)?,
            self.gateway.0.to_pem().map_err(e)?,
            self.gateway.1.private_key_to_pem_pkcs8().map_err(e)?,
            self.rogue_head_end.0.to_pem().map_err(e)?,
            self.rogue_head_end
                .1
                .private_key_to_pem_pkcs8()
                .map_err(e)?,
        ];
        for (name, pem) in FILES.iter().zip(pems) {
            std::fs::write(dir.join(name), pem).map_err(e)?;
        }
        Ok(())
    }

    /// Reads the PEM files written by [`TestPki::save`].
    pub fn load(dir: &Path) -> Result<TestPki, TestKitError> {
        let read = |i: usize| std::fs::read(dir.join(FILES[i])).map_err(e);
        let cert = |i: usize| X509::from_pem(&read(i)?).map_err(e);
        let key = |i: usize| PKey::private_key_from_pem(&read(i)?).map_err(e);
        Ok(TestPki {
            ca: cert(0)?,
            head_end: (cert(1)?, key(2)?),
            gateway: (cert(3)?, key(4)?),
            rogue_head_end: (cert(5)?, key(6)?),
        })
    }

    /// A verifier trusting the utility CA.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(vec![self.ca.clone()])
    }

    /// The gateway's receipt signer.
    pub fn gateway_signer(&self) -> Result<DocumentSigner, TestKitError> {
        DocumentSigner::new(
            self.gateway.1.clone(),
            std::slice::from_ref(&self.gateway.0),
        )
        .map_err(e)
    }

    fn token_signer(&self, rogue: bool) -> Result<TokenSigner, TestKitError> {
        let (c, k) = if rogue {
            &self.rogue_head_end
        } else {
            &self.head_end
        };
        Ok(TokenSigner::new(
            DocumentSigner::new(k.clone(), std::slice::from_ref(c)).map_err(e)?,
        ))
    }

    fn sign(&self, rogue: bool, t: &CreditToken) -> Result<Vec<u8>, TestKitError> {
        self.token_signer(rogue)?
            .sign(t)
            .map_err(e)?
            .encode()
            .map_err(e)
    }

    /// A token in EUR signed by the head-end, as wire octets.
    pub fn token(
        &self,
        meter: &str,
        serial: u64,
        amount_minor: u64,
        issued_at: u64,
        expires_at: u64,
    ) -> Result<Vec<u8>, TestKitError> {
        self.sign(
            false,
            &token(meter, serial, amount_minor, issued_at, expires_at),
        )
    }

    /// A head-end account statement, signed by the head-end (or, with `rogue`, by the untrusted CA's
    /// head-end), as wire octets.
    pub fn statement(
        &self,
        statement: &concentrator_security::restore::AccountStatement,
        rogue: bool,
    ) -> Result<Vec<u8>, TestKitError> {
        statement.sign(&self.token_signer(rogue)?).map_err(e)
    }

    /// A change-of-tenancy order signed by the head-end (or, with `rogue`, by the untrusted CA's
    /// head-end), as wire octets.
    pub fn order(
        &self,
        order: &concentrator_security::tenancy::TenancyOrder,
        rogue: bool,
    ) -> Result<Vec<u8>, TestKitError> {
        order.sign(&self.token_signer(rogue)?).map_err(e)
    }

    /// A verifier of gateway-signed documents (receipts, settlements) trusting the utility CA.
    pub fn receipt_verifier(&self) -> concentrator_security::receipt::ReceiptVerifier {
        concentrator_security::receipt::ReceiptVerifier::new(vec![self.ca.clone()])
    }

    /// The same, signed by the untrusted CA's head-end.
    pub fn rogue_token(
        &self,
        meter: &str,
        serial: u64,
        amount_minor: u64,
        issued_at: u64,
        expires_at: u64,
    ) -> Result<Vec<u8>, TestKitError> {
        self.sign(
            true,
            &token(meter, serial, amount_minor, issued_at, expires_at),
        )
    }
}

fn token(
    meter: &str,
    serial: u64,
    amount_minor: u64,
    issued_at: u64,
    expires_at: u64,
) -> CreditToken {
    CreditToken {
        meter_id: meter.into(),
        serial,
        amount_minor,
        currency: *b"EUR",
        issued_at,
        expires_at,
        key_id: [0; 8],
    }
}

/// A simulated meter: constant power plus a per-meter wobble, its register a pure function of time, so a
/// restarted process reads the same values a real meter would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMeter {
    /// The meter number.
    pub meter_id: String,
    /// Its physical serial.
    pub serial: String,
    /// Register at `epoch_ms`, Wh.
    pub start_wh: u64,
    /// Average power, W.
    pub power_w: u64,
}

impl SimMeter {
    /// The register at wall time `now_ms` for a run that started at `epoch_ms`, sped up by `speed`
    /// (simulated seconds per real second).
    pub fn register_at(&self, epoch_ms: u64, now_ms: u64, speed: u64) -> u64 {
        let sim_ms = now_ms.saturating_sub(epoch_ms).saturating_mul(speed);
        self.start_wh + (u128::from(self.power_w) * u128::from(sim_ms) / 3_600_000) as u64
    }
}

/// A head-end's token stream for soak runs: `per_meter` tokens for each meter, serials 1.., amounts
/// varying, valid from `issued_at` for a year. Written as repeated `u8 meter length, meter, u64 serial,
/// u32 length, token` (big-endian).
pub fn write_token_stream(
    pki: &TestPki,
    meters: &[String],
    per_meter: u64,
    issued_at: u64,
    path: &Path,
) -> Result<(), TestKitError> {
    let mut out = Vec::new();
    for meter in meters {
        for serial in 1..=per_meter {
            let t = pki.token(
                meter,
                serial,
                200 + (serial * 137) % 900,
                issued_at,
                issued_at + 365 * 86_400,
            )?;
            out.push(meter.len() as u8);
            out.extend_from_slice(meter.as_bytes());
            out.extend_from_slice(&serial.to_be_bytes());
            out.extend_from_slice(&(t.len() as u32).to_be_bytes());
            out.extend_from_slice(&t);
        }
    }
    std::fs::write(path, out).map_err(e)
}

/// Reads a stream written by [`write_token_stream`].
pub fn read_token_stream(bytes: &[u8]) -> Result<HashMap<(String, u64), Vec<u8>>, TestKitError> {
    let mut map = HashMap::new();
    let mut rest = bytes;
    let take = |n: usize, rest: &mut &[u8]| -> Result<Vec<u8>, TestKitError> {
        if rest.len() < n {
            return Err(TestKitError("token stream truncated".into()));
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Ok(a.to_vec())
    };
    while !rest.is_empty() {
        let len = usize::from(take(1, &mut rest)?[0]);
        let meter = String::from_utf8(take(len, &mut rest)?).map_err(e)?;
        let serial = u64::from_be_bytes(
            take(8, &mut rest)?
                .try_into()
                .map_err(|_| TestKitError("serial".into()))?,
        );
        let n = u32::from_be_bytes(
            take(4, &mut rest)?
                .try_into()
                .map_err(|_| TestKitError("length".into()))?,
        );
        let token = take(n as usize, &mut rest)?;
        map.insert((meter, serial), token);
    }
    Ok(map)
}

/// Top-ups a harness saw acknowledged (a receipt printed or written): (meter, serial) → amount.
pub type Acknowledged = BTreeMap<(String, u64), u64>;

/// The checks after a crash, from the store alone: it opens (the caller opened it); the audit chain
/// verifies and every balance, charge rounding, register checkpoint and serial recomputes from the log
/// ([`crate::check::check_store`]); every acknowledged top-up is stored with its amount (nothing lost);
/// no serial is applied twice (the log and the token records agree). Returns the recomputed report.
pub fn check_after_crash<S: crate::Store + ?Sized>(
    store: &S,
    acknowledged: &Acknowledged,
) -> Result<crate::check::CheckReport, TestKitError> {
    let report = crate::check::check_store(store).map_err(e)?;
    for ((meter, serial), amount) in acknowledged {
        match crate::tenancy::applied_token(store, meter, *serial).map_err(e)? {
            None => {
                return Err(TestKitError(format!(
                    "acknowledged token {meter}/{serial} was lost"
                )))
            }
            Some(stored) if stored.receipt.amount_minor != *amount => {
                return Err(TestKitError(format!(
                    "token {meter}/{serial} was acknowledged for {amount} but stored for {}",
                    stored.receipt.amount_minor
                )))
            }
            Some(_) => {}
        }
    }
    for (meter, account) in crate::load_accounts(store).map_err(e)? {
        let recomputed = report.meters.get(&meter).ok_or_else(|| {
            TestKitError(format!("meter {meter} has an account but no audit history"))
        })?;
        if account.balance_minor() != recomputed.balance_minor {
            return Err(TestKitError(format!(
                "meter {meter}: balance {} stored, {} recomputed from the audit log",
                account.balance_minor(),
                recomputed.balance_minor
            )));
        }
    }
    Ok(report)
}
