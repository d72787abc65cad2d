//! TLS settings of a target connection: the policy's mode ([`TargetTls`]), its CA file
//! and the system trust store, and the rustls client configuration built from them
//! (aws-lc-rs provider).
//!
//! `require` encrypts without checking the certificate unless a CA file is given, in
//! which case the chain is checked but not the host name (libpq's behaviour: `require`
//! with a root certificate acts as `verify-ca`); `verify-full` checks the chain (against
//! the CA file or the system trust store) and the host name.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tracing::debug;

/// How the connection to the server is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetTls {
    /// Plain TCP.
    Disable,
    /// TLS; with a CA file the chain is checked (not the host name), without one nothing is.
    Require {
        /// PEM file of trusted CA certificates.
        ca_file: Option<PathBuf>,
    },
    /// TLS with the chain checked against the CA file (or the system trust store) and
    /// the host name checked against the certificate.
    VerifyFull {
        /// PEM file of trusted CA certificates; the system trust store when absent.
        ca_file: Option<PathBuf>,
    },
}

impl From<Option<&crate::policy::TlsSpec>> for TargetTls {
    /// The policy's `tls` of a connection; no `tls` is plain TCP.
    fn from(spec: Option<&crate::policy::TlsSpec>) -> Self {
        let Some(spec) = spec else {
            return TargetTls::Disable;
        };
        let ca_file = spec.ca_file.clone();
        match spec.mode {
            crate::policy::TlsMode::Disable => TargetTls::Disable,
            crate::policy::TlsMode::Require => TargetTls::Require { ca_file },
            crate::policy::TlsMode::VerifyFull => TargetTls::VerifyFull { ca_file },
        }
    }
}

/// TLS settings that cannot be used: read when the target is built, before any I/O.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum TlsSetupError {
    /// The TLS CA file could not be read.
    #[error("cannot read the TLS CA file {}", path.display())]
    #[strum(serialize = "read_ca_file")]
    ReadCaFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The TLS CA file holds no usable certificate.
    #[error("the TLS CA file {} holds no usable PEM certificate", path.display())]
    #[strum(serialize = "invalid_ca_file")]
    InvalidCaFile {
        /// The file.
        path: PathBuf,
    },
    /// `verify-full` without a CA file, and the system trust store has no certificate.
    #[error("no CA file given and the system trust store holds no usable certificate")]
    #[strum(serialize = "no_system_roots")]
    NoSystemRoots,
    /// The TLS client configuration could not be built.
    #[error("cannot build the TLS configuration")]
    #[strum(serialize = "tls_config")]
    TlsConfig {
        /// rustls' refusal.
        #[source]
        source: rustls::Error,
    },
    /// The certificate verifier could not be built.
    #[error("cannot build the TLS certificate verifier")]
    #[strum(serialize = "tls_verifier")]
    TlsVerifier {
        /// rustls' refusal.
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
}

impl TlsSetupError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        self.into()
    }
}

/// The CA certificates of a PEM file (read now, not at each connect); a file without
/// any is [`TlsSetupError::InvalidCaFile`].
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = std::fs::read(path).map_err(|source| TlsSetupError::ReadCaFile {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid_ca_file(path))?;
    if certs.is_empty() {
        return Err(invalid_ca_file(path));
    }
    Ok(certs)
}

fn invalid_ca_file(path: &Path) -> TlsSetupError {
    TlsSetupError::InvalidCaFile {
        path: path.to_owned(),
    }
}

/// Every certificate of the system trust store; the parts that cannot be read are
/// skipped (and logged at debug level).
pub fn system_certificates() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        debug!(error = %error, "Skipping part of the system trust store.");
    }
    found.certs
}

/// The rustls client configuration of `tls`; `None` for [`TargetTls::Disable`].
pub fn client_config(tls: &TargetTls) -> Result<Option<Arc<ClientConfig>>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match tls {
        TargetTls::Disable => return Ok(None),
        TargetTls::Require { ca_file } => {
            let chain = match ca_file {
                Some(path) => Some(webpki_verifier(root_store(path)?, provider.clone())?),
                None => None,
            };
            Arc::new(NoHostCheck {
                chain,
                provider: provider.clone(),
            })
        }
        TargetTls::VerifyFull { ca_file } => {
            let roots = match ca_file {
                Some(path) => root_store(path)?,
                None => system_roots()?,
            };
            webpki_verifier(roots, provider.clone())?
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsSetupError::TlsConfig { source })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in read_ca_file(path)? {
        roots.add(cert).map_err(|_| invalid_ca_file(path))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(system_certificates());
    debug!(added, ignored, "Loaded the system trust store.");
    if roots.is_empty() {
        return Err(TlsSetupError::NoSystemRoots);
    }
    Ok(roots)
}

fn webpki_verifier(
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsSetupError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|source| TlsSetupError::TlsVerifier { source })
}

/// The verifier of `require`: the host name is never checked. Without a CA file
/// (`chain` is `None`) it is encryption only, as libpq does; with one (libpq's
/// `verify-ca`) the chain must lead to the CA. Handshake signatures are always checked
/// (and PostgreSQL's SCRAM channel binding ties the login to this certificate).
#[derive(Debug)]
struct NoHostCheck {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoHostCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_is_reported_with_its_path() {
        let err = client_config(&TargetTls::VerifyFull {
            ca_file: Some(PathBuf::from("/nonexistent/rotor-ca.pem")),
        })
        .unwrap_err();
        assert_eq!(err.kind(), "read_ca_file");
        assert!(err.to_string().contains("/nonexistent/rotor-ca.pem"));
    }
}
