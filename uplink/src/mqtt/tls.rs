//! TLS to the broker: the utility CA as the only trust anchor, the gateway's client certificate and key
//! (PEM), TLS 1.2 or later. native-tls is openssl on Linux, the same library the rest of the gateway uses.

use native_tls::{Certificate, Identity, Protocol, TlsConnector};

use super::error::UplinkError;

/// The gateway's TLS material, PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The CA(s) that sign the broker's certificate (the utility CA).
    pub ca_pem: Vec<u8>,
    /// The gateway's certificate (CN = gateway id), followed by any intermediates.
    pub cert_pem: Vec<u8>,
    /// The gateway's private key, PEM in any form openssl reads (PKCS#8, PKCS#1, SEC1).
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("ca_pem", &self.ca_pem.len())
            .field("cert_pem", &self.cert_pem.len())
            .field("key_pem", &"<secret>")
            .finish()
    }
}

fn tls(what: &'static str) -> impl Fn(String) -> UplinkError {
    move |reason| UplinkError::Tls { what, reason }
}

impl TlsIdentity {
    /// A connector that trusts only the CA(s) and presents the gateway's certificate.
    pub fn connector(&self) -> Result<TlsConnector, UplinkError> {
        let key = openssl::pkey::PKey::private_key_from_pem(&self.key_pem)
            .and_then(|k| k.private_key_to_pem_pkcs8())
            .map_err(|e| tls("private key")(e.to_string()))?;
        let identity = Identity::from_pkcs8(&self.cert_pem, &key)
            .map_err(|e| tls("client certificate and key")(e.to_string()))?;
        let cas = openssl::x509::X509::stack_from_pem(&self.ca_pem)
            .map_err(|e| tls("CA certificate")(e.to_string()))?;
        if cas.is_empty() {
            return Err(tls("CA certificate")("no certificate in the PEM".into()));
        }
        let mut b = TlsConnector::builder();
        b.identity(identity)
            .min_protocol_version(Some(Protocol::Tlsv12))
            .disable_built_in_roots(true);
        for ca in cas {
            let der = ca
                .to_der()
                .map_err(|e| tls("CA certificate")(e.to_string()))?;
            let cert =
                Certificate::from_der(&der).map_err(|e| tls("CA certificate")(e.to_string()))?;
            b.add_root_certificate(cert);
        }
        b.build().map_err(|e| tls("connector")(e.to_string()))
    }
}
