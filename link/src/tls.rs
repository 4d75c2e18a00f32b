//! rustls configurations from PEM files.
//!
//! A client trusts the certificates of a CA bundle when one is given, else
//! the system's roots (`/etc/ssl/certs`); it always verifies the peer's name.
//! A server presents a certificate chain and its private key. Both offer
//! only what rustls considers safe (TLS 1.2 and 1.3).

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A TLS configuration that could not be built. Names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A certificate file holds no certificate.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The system's trust store has no usable root.
    NoSystemRoots {
        /// What the loader reported.
        detail: String,
    },
    /// rustls refused the material (e.g. a key that does not match).
    Rejected {
        /// What rustls said.
        detail: String,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Pem { path, detail } => {
                write!(f, "cannot use the PEM file {}: {detail}", path.display())
            }
            TlsError::NoCertificate { path } => {
                write!(f, "{} holds no PEM certificate", path.display())
            }
            TlsError::NoSystemRoots { detail } => {
                write!(
                    f,
                    "no CA file given and the system has no usable roots ({detail})"
                )
            }
            TlsError::Rejected { detail } => write!(f, "TLS configuration refused: {detail}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The certificates of a PEM file, at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |e: rustls_pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The roots a client trusts: those of `ca_file`, or the system's.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| TlsError::Pem {
                    path: path.to_owned(),
                    detail: e.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let detail = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(TlsError::NoSystemRoots { detail });
            }
        }
    }
    Ok(roots)
}

/// A client configuration trusting `ca_file` (or the system's roots),
/// without client authentication.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder()
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server configuration presenting `cert_file`'s chain with `key_file`'s
/// key, speaking HTTP/1.1 over ALPN.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Pem {
        path: key_file.to_owned(),
        detail: e.to_string(),
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rejected {
            detail: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS acceptor for a listener.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    Ok(tokio_rustls::TlsAcceptor::from(server_config(
        cert_file, key_file,
    )?))
}
