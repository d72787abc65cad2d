//! HTTPS for the fake API server: a certificate authority made for one server run and a
//! server certificate it signs for the loopback names (`127.0.0.1`, `::1`, `localhost`).
//!
//! The CA's certificate goes into the kubeconfig as `certificate-authority-data`, so kube
//! clients and real `kubectl` verify the server as they verify a cluster; nothing is
//! written to disk but the kubeconfig. The private keys live only in memory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use super::ApiServerError;

/// The TLS identity of one server run: its CA (for kubeconfigs) and the acceptor that
/// serves the certificate the CA signed.
#[derive(Clone)]
pub struct ServerTls {
    ca_pem: String,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Makes a fresh CA and a server certificate for the loopback names, and a rustls
    /// server configuration (aws-lc-rs, TLS 1.2 and 1.3, ALPN `http/1.1`) serving it.
    pub fn generate() -> Result<ServerTls, ApiServerError> {
        let tls_err = |e: rcgen::Error| ApiServerError::Tls(e.to_string());
        let mut ca_params = params(
            Vec::new(),
            "rotor-testkit fake-kube-apiserver CA",
            vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ],
        )
        .map_err(tls_err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(tls_err)?)
            .map_err(tls_err)?;

        let mut params = params(
            vec!["localhost".to_owned()],
            "fake-kube-apiserver",
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
        )
        .map_err(tls_err)?;
        params.subject_alt_names.extend([
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = params.signed_by(&key, &ca).map_err(tls_err)?;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ApiServerError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![
                    CertificateDer::from(cert.der().to_vec()),
                    CertificateDer::from(ca.der().to_vec()),
                ],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(|e| ApiServerError::Tls(e.to_string()))?;
        // The server speaks HTTP/1.1 only; clients that offer h2 fall back to it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            ca_pem: ca.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The CA certificate, PEM-encoded (what `certificate-authority-data` holds, before
    /// base64).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub(super) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Certificate parameters for DNS `names`, common name `common_name` and `usages`.
fn params(
    names: Vec<String>,
    common_name: &str,
    usages: Vec<KeyUsagePurpose>,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = usages;
    Ok(params)
}
