//! Test certificates, generated per run (never committed): a CA and a
//! server certificate it signed for `localhost` and `127.0.0.1`.

use std::path::{Path, PathBuf};

/// PEM files in a directory of their own.
pub struct Certs {
    pub dir: PathBuf,
    /// The CA that signed `cert`.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Another CA: a client trusting only it must refuse the server.
    pub other_ca: PathBuf,
    /// A server certificate and key for `localhost` signed by the other CA:
    /// a client trusting `ca` must refuse it.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> (rcgen::CertificateParams, rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("CA cert").pem();
    (params, key, pem)
}

fn write(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write PEM");
    // Read by mosquitto and postgres, which run as their own users.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// A server certificate for `localhost` and `127.0.0.1` from `issuer`.
fn server(issuer: rcgen::Issuer<'_, rcgen::KeyPair>) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    (params.signed_by(&key, &issuer).expect("server cert"), key)
}

impl Certs {
    /// Generates the set under a new temporary directory named for `tag`.
    pub fn generate(tag: &str) -> Certs {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("emtrack-certs-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cert dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let (ca_params, ca_key, ca_pem) = ca("emtrack test CA");
        let (other_params, other_key, other_pem) = ca("someone else's CA");
        let (cert, key) = server(rcgen::Issuer::new(ca_params, ca_key));
        let (stranger, stranger_key) = server(rcgen::Issuer::new(other_params, other_key));
        let certs = Certs {
            stranger_cert: dir.join("stranger.pem"),
            stranger_key: dir.join("stranger.key"),
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            other_ca: dir.join("other-ca.pem"),
            dir,
        };
        write(&certs.ca, &ca_pem);
        write(&certs.other_ca, &other_pem);
        write(&certs.cert, &cert.pem());
        write(&certs.key, &key.serialize_pem());
        write(&certs.stranger_cert, &stranger.pem());
        write(&certs.stranger_key, &stranger_key.serialize_pem());
        certs
    }
}
