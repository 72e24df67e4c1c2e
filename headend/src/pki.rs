//! The pilot's certificates, made with openssl: the utility CA and what it issues. The role of a
//! certificate is its subject OU (`security::pki::Role`): `head-end` (token signing, the head-end's MQTT
//! client, the phone-facing server), `gateway` (a gateway's MQTT client and receipt-signing certificate).
//!
//! Every certificate is valid from [`clock::CERTIFICATE_BACKDATE_S`] (a day) before it is made, as CAs do: a
//! gateway without a real-time clock may be behind, and must still open TLS and verify tokens
//! (docs/security.md, "Clocks").

use std::path::Path;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509NameBuilder, X509};

use crate::error::{HeadEndError, Result};
use concentrator_security::clock;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS client (MQTT clients) that also signs documents (tokens, receipts).
    ClientAndSigning,
    /// Only signs documents (the token signer).
    Signing,
    /// A TLS server (the broker, the phone-facing server).
    Server,
}

/// One certificate to issue.
#[derive(Debug, Clone)]
pub struct CertSpec<'a> {
    /// Subject CN.
    pub cn: &'a str,
    /// Subject OU (the role), if any.
    pub ou: Option<&'a str>,
    /// What it is for.
    pub usage: Usage,
    /// DNS names and IP addresses for a server.
    pub names: &'a [String],
    /// Validity, days.
    pub days: u32,
}

/// A fresh P-256 key.
pub fn new_key() -> Result<PKey<Private>> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
        .map_err(HeadEndError::openssl("choosing the P-256 curve"))?;
    let ec = EcKey::generate(&group).map_err(HeadEndError::openssl("generating a P-256 key"))?;
    PKey::from_ec_key(ec).map_err(HeadEndError::openssl("wrapping a P-256 key"))
}

fn serial() -> Result<openssl::asn1::Asn1Integer> {
    let mut bn = BigNum::new().map_err(HeadEndError::openssl("making a serial number"))?;
    bn.rand(120, MsbOption::MAYBE_ZERO, false)
        .map_err(HeadEndError::openssl("making a serial number"))?;
    bn.to_asn1_integer()
        .map_err(HeadEndError::openssl("making a serial number"))
}

fn name(cn: &str, ou: Option<&str>) -> Result<openssl::x509::X509Name> {
    let err = HeadEndError::openssl;
    let mut n = X509NameBuilder::new().map_err(err("building a subject name"))?;
    n.append_entry_by_text("O", "concentrator pilot")
        .map_err(err("building a subject name"))?;
    if let Some(ou) = ou {
        n.append_entry_by_text("OU", ou)
            .map_err(err("building a subject name"))?;
    }
    n.append_entry_by_text("CN", cn)
        .map_err(err("building a subject name (CN)"))?;
    Ok(n.build())
}

/// notBefore of a certificate made now: [`clock::CERTIFICATE_BACKDATE_S`] ago.
fn not_before() -> std::result::Result<Asn1Time, openssl::error::ErrorStack> {
    let now = concentrator_protocol::unix_now();
    Asn1Time::from_str(&clock::not_before(now).asn1())
}

/// A self-signed utility CA, valid from a day ago for `days`.
pub fn make_ca(cn: &str, days: u32) -> Result<(X509, PKey<Private>)> {
    let doing = "making the utility CA certificate";
    let e = || HeadEndError::openssl(doing);
    let key = new_key()?;
    let subject = name(cn, None)?;
    let mut b = X509::builder().map_err(e())?;
    b.set_version(2).map_err(e())?;
    let sn = serial()?;
    b.set_serial_number(&sn).map_err(e())?;
    b.set_subject_name(&subject).map_err(e())?;
    b.set_issuer_name(&subject).map_err(e())?;
    b.set_pubkey(&key).map_err(e())?;
    let (from, until) = (
        not_before().map_err(e())?,
        Asn1Time::days_from_now(days).map_err(e())?,
    );
    b.set_not_before(&from).map_err(e())?;
    b.set_not_after(&until).map_err(e())?;
    b.append_extension(
        BasicConstraints::new()
            .critical()
            .ca()
            .build()
            .map_err(e())?,
    )
    .map_err(e())?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .map_err(e())?,
    )
    .map_err(e())?;
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .map_err(e())?;
    b.append_extension(ski).map_err(e())?;
    b.sign(&key, MessageDigest::sha256()).map_err(e())?;
    Ok((b.build(), key))
}

/// Issues a certificate for a fresh key under the CA, valid from a day ago for `spec.days`.
pub fn issue(
    ca: &X509,
    ca_key: &PKey<Private>,
    spec: &CertSpec<'_>,
) -> Result<(X509, PKey<Private>)> {
    let doing = "issuing a certificate";
    let e = || HeadEndError::openssl(doing);
    let key = new_key()?;
    let mut b = X509::builder().map_err(e())?;
    b.set_version(2).map_err(e())?;
    let sn = serial()?;
    b.set_serial_number(&sn).map_err(e())?;
    let subject = name(spec.cn, spec.ou)?;
    b.set_subject_name(&subject).map_err(e())?;
    b.set_issuer_name(ca.subject_name()).map_err(e())?;
    b.set_pubkey(&key).map_err(e())?;
    let (from, until) = (
        not_before().map_err(e())?,
        Asn1Time::days_from_now(spec.days).map_err(e())?,
    );
    b.set_not_before(&from).map_err(e())?;
    b.set_not_after(&until).map_err(e())?;
    b.append_extension(BasicConstraints::new().build().map_err(e())?)
        .map_err(e())?;
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature();
    if spec.usage != Usage::Signing {
        ku.key_agreement();
    }
    b.append_extension(ku.build().map_err(e())?).map_err(e())?;
    match spec.usage {
        Usage::ClientAndSigning => {
            b.append_extension(ExtendedKeyUsage::new().client_auth().build().map_err(e())?)
                .map_err(e())?;
        }
        Usage::Server => {
            b.append_extension(ExtendedKeyUsage::new().server_auth().build().map_err(e())?)
                .map_err(e())?;
        }
        Usage::Signing => {}
    }
    if !spec.names.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for n in spec.names {
            if n.parse::<std::net::IpAddr>().is_ok() {
                san.ip(n);
            } else {
                san.dns(n);
            }
        }
        let ext = san.build(&b.x509v3_context(Some(ca), None)).map_err(e())?;
        b.append_extension(ext).map_err(e())?;
    }
    b.sign(ca_key, MessageDigest::sha256()).map_err(e())?;
    Ok((b.build(), key))
}

/// Writes a file, creating or replacing it; `secret` files get mode 0600.
pub fn write_file(path: &Path, what: &'static str, data: &[u8], secret: bool) -> Result<()> {
    use std::io::Write;
    let fix = "check that the directory exists and is writable";
    let tmp = path.with_extension("tmp-write");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp).map_err(HeadEndError::io(what, &tmp, fix))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(HeadEndError::io(what, &tmp, fix))?;
    std::fs::rename(&tmp, path).map_err(HeadEndError::io(what, path, fix))
}

/// A PEM certificate (the first of the file).
pub fn load_cert(path: &Path, what: &'static str) -> Result<X509> {
    let pem = std::fs::read(path).map_err(HeadEndError::io(
        what,
        path,
        "run `concentrator-headend init` or fix the path in headend.toml",
    ))?;
    X509::stack_from_pem(&pem)
        .ok()
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| HeadEndError::Pki {
            what,
            path: path.to_path_buf(),
            reason: "no PEM certificate in the file; give the PEM certificate `init` wrote".into(),
        })
}

/// A PEM private key.
pub fn load_key(path: &Path, what: &'static str) -> Result<PKey<Private>> {
    let pem = std::fs::read(path).map_err(HeadEndError::io(
        what,
        path,
        "run `concentrator-headend init` or fix the path in headend.toml",
    ))?;
    PKey::private_key_from_pem(&pem).map_err(|e| HeadEndError::Pki {
        what,
        path: path.to_path_buf(),
        reason: format!("not a PEM private key ({e}); give the key file `init` wrote"),
    })
}

/// PEM octets of a certificate.
pub fn cert_pem(c: &X509) -> Result<Vec<u8>> {
    c.to_pem()
        .map_err(HeadEndError::openssl("encoding a certificate"))
}

/// PKCS#8 PEM octets of a key.
pub fn key_pem(k: &PKey<Private>) -> Result<Vec<u8>> {
    k.private_key_to_pem_pkcs8()
        .map_err(HeadEndError::openssl("encoding a private key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use concentrator_security::clock::CERTIFICATE_BACKDATE_S;
    use concentrator_security::pki::{Role, TrustStore};

    use concentrator_protocol::unix_now;

    /// A gateway whose clock is behind still accepts what provisioning just issued. Failed before:
    /// "certificate is not yet valid" at now - 120 s.
    #[test]
    fn a_freshly_issued_certificate_verifies_on_a_clock_two_minutes_behind() {
        let (ca, ca_key) = make_ca("test utility CA", 30).unwrap();
        let (cert, _) = issue(
            &ca,
            &ca_key,
            &CertSpec {
                cn: "gw-1",
                ou: Some("gateway"),
                usage: Usage::ClientAndSigning,
                names: &[],
                days: 30,
            },
        )
        .unwrap();
        let trust = TrustStore::new(vec![ca]);
        let chain = [cert.to_der().unwrap()];
        let now = unix_now();
        for behind in [120, 3_600, CERTIFICATE_BACKDATE_S - 60] {
            trust
                .verify_chain(&chain, Role::Gateway, now - behind)
                .unwrap_or_else(|e| panic!("{behind} s behind: {e}"));
        }
        // Not further than the stated backdate.
        let e = trust
            .verify_chain(&chain, Role::Gateway, now - CERTIFICATE_BACKDATE_S - 60)
            .unwrap_err();
        assert!(e.to_string().contains("not yet valid"), "{e}");
    }
}
