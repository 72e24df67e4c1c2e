//! TLS set-up for both ends: TLS 1.2 or newer; the client trusts only the utility CA it is given (not the
//! system's store) and checks the server's name.

use std::path::Path;

use openssl::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use thiserror::Error;

/// Why a TLS end could not be set up.
#[derive(Debug, Error)]
pub enum TlsSetupError {
    /// A file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold what it should.
    #[error("{what} {path} is not usable: {reason}; give a PEM file")]
    Bad {
        /// What the file should hold.
        what: &'static str,
        /// The path.
        path: String,
        /// openssl's reason.
        reason: String,
    },
    /// openssl failed otherwise.
    #[error("TLS set-up failed: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
}

/// The server's acceptor from a PEM certificate chain (server first) and its PEM private key.
pub fn acceptor(cert_chain: &Path, key: &Path) -> Result<SslAcceptor, TlsSetupError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_certificate_chain_file(cert_chain)
        .map_err(|e| TlsSetupError::Bad {
            what: "server certificate chain",
            path: cert_chain.display().to_string(),
            reason: e.to_string(),
        })?;
    b.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| TlsSetupError::Bad {
            what: "server private key",
            path: key.display().to_string(),
            reason: e.to_string(),
        })?;
    b.check_private_key().map_err(|e| TlsSetupError::Bad {
        what: "server private key",
        path: key.display().to_string(),
        reason: format!("does not match the certificate: {e}"),
    })?;
    Ok(b.build())
}

/// A connector that trusts exactly the certificates in `ca_pem` (a PEM file of one or more CA
/// certificates), TLS 1.2 or newer, with peer and host-name verification.
pub fn connector(ca_pem: &Path) -> Result<SslConnector, TlsSetupError> {
    let pem = std::fs::read(ca_pem).map_err(|source| TlsSetupError::Read {
        what: "utility CA certificate",
        path: ca_pem.display().to_string(),
        source,
    })?;
    connector_from_pem(&pem).map_err(|e| match e {
        TlsSetupError::Bad { what, reason, .. } => TlsSetupError::Bad {
            what,
            path: ca_pem.display().to_string(),
            reason,
        },
        other => other,
    })
}

/// [`connector`] with the CA certificates given as PEM octets.
pub fn connector_from_pem(ca_pem: &[u8]) -> Result<SslConnector, TlsSetupError> {
    let bad = |reason: String| TlsSetupError::Bad {
        what: "utility CA certificate",
        path: "(given)".into(),
        reason,
    };
    let cas = X509::stack_from_pem(ca_pem).map_err(|e| bad(e.to_string()))?;
    if cas.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let mut store = X509StoreBuilder::new()?;
    for ca in cas {
        store.add_cert(ca)?;
    }
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    // A store of our own replaces the default paths the builder loaded: only the utility CA is trusted.
    b.set_cert_store(store.build());
    b.set_verify(SslVerifyMode::PEER);
    Ok(b.build())
}
