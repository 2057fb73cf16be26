//! A test certificate authority, made with rcgen, and the TLS pieces built on it: a server
//! configuration for the mock upstream (certificate for `localhost` only), and the PEM file the
//! proxy is told to trust with `PROXY_UPSTREAM_CA`.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What a TLS mock offers in ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` and `http/1.1`, as OpenAI's edge does.
    Both,
    Http1Only,
    Http2Only,
}

pub struct TestCa {
    /// The CA certificate in PEM, for `PROXY_UPSTREAM_CA`.
    pub ca_pem: PathBuf,
    leaf: CertificateDer<'static>,
    ca: CertificateDer<'static>,
    leaf_key: Vec<u8>,
    /// The `localhost` certificate and its key in PEM, for servers that read files.
    leaf_pem: String,
    key_pem: String,
}

impl TestCa {
    /// A fresh CA and a server certificate for `localhost`, signed by it.
    pub fn new(name: &str) -> TestCa {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("memoctopus test CA {name}"),
        );
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "memoctopus-ca-{}-{name}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        TestCa {
            ca_pem,
            leaf: leaf.der().clone(),
            ca: ca.der().clone(),
            leaf_key: leaf_key.serialize_der(),
            leaf_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// Writes the `localhost` certificate and key as PEM files in `dir`; returns their paths.
    pub fn server_files(&self, dir: &std::path::Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert, &self.leaf_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    /// A root store that trusts this CA alone, for clients of a server that uses its files.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        roots
    }

    pub fn ca_pem_path(&self) -> String {
        self.ca_pem.display().to_string()
    }

    /// The mock upstream's TLS configuration: the `localhost` certificate and its chain.
    pub fn server_config(&self, alpn: Alpn) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![self.leaf.clone(), self.ca.clone()], key)
        .unwrap();
        config.alpn_protocols = match alpn {
            Alpn::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1Only => vec![b"http/1.1".to_vec()],
            Alpn::Http2Only => vec![b"h2".to_vec()],
        };
        Arc::new(config)
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
