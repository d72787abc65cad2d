//! TLS for MariaDB/MySQL connections, as far as mysql_async 0.37 allows (see the
//! module documentation of [`super`]): the policy's [`TargetTls`] as mysql_async's
//! [`SslOpts`], and how a TLS failure is told apart and explained.

use mysql_async::{IoError, SslOpts};
use tracing::debug;

use crate::credentials::target::TargetTls;
use crate::credentials::target::tls::{TlsSetupError, read_ca_file, system_certificates};

/// The rustls error behind a failed connection, if TLS is what failed. The handshake's
/// errors reach mysql_async as an `io::Error` wrapping the rustls error.
pub(super) fn tls_failure(error: &mysql_async::Error) -> Option<&rustls::Error> {
    match error {
        mysql_async::Error::Io(IoError::Tls(mysql_async::TlsError::Tls(e))) => Some(e),
        mysql_async::Error::Io(IoError::Io(e)) => e.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// Advice for the known mysql_async gap (see the module documentation): `require` with a
/// CA file still checks the host name.
pub(super) fn tls_hint(tls: &TargetTls, error: &mysql_async::Error) -> &'static str {
    if matches!(tls, TargetTls::Require { ca_file: Some(_) }) && is_name_mismatch(error) {
        " (tls.mode require with caFile cannot skip the host-name check with this \
         MySQL client library: use a host name the certificate names)"
    } else {
        ""
    }
}

/// Whether the connection failed because the certificate does not name the host.
pub(super) fn is_name_mismatch(error: &mysql_async::Error) -> bool {
    matches!(
        tls_failure(error),
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. }
        ))
    )
}

pub(super) fn build_ssl_opts(tls: &TargetTls) -> Result<Option<SslOpts>, TlsSetupError> {
    let ssl = match tls {
        TargetTls::Disable => return Ok(None),
        // Built-in roots stay in: mysql_async's signature verifier needs a non-empty store,
        // and with invalid certificates accepted they decide nothing.
        TargetTls::Require { ca_file: None } => {
            SslOpts::default().with_danger_accept_invalid_certs(true)
        }
        TargetTls::Require {
            ca_file: Some(path),
        } => SslOpts::default()
            .with_root_certs(der_buffers(load_ca_file(path)?))
            .with_disable_built_in_roots(true)
            .with_danger_skip_domain_validation(true),
        TargetTls::VerifyFull { ca_file } => {
            let roots = match ca_file {
                Some(path) => load_ca_file(path)?,
                None => system_roots()?,
            };
            SslOpts::default()
                .with_root_certs(der_buffers(roots))
                .with_disable_built_in_roots(true)
        }
    };
    crate::install_crypto_provider();
    Ok(Some(ssl))
}

/// mysql_async's root certificate list (its `PathOrBuf` type is not exported by name);
/// a buffer without PEM markers is taken as one DER certificate.
fn der_buffers<T: From<Vec<u8>>>(certs: Vec<Vec<u8>>) -> Vec<T> {
    certs.into_iter().map(T::from).collect()
}

/// The CA certificates of a PEM file, as DER (read now, not at each connect).
fn load_ca_file(path: &std::path::Path) -> Result<Vec<Vec<u8>>, TlsSetupError> {
    Ok(read_ca_file(path)?
        .into_iter()
        .map(|cert| cert.as_ref().to_vec())
        .collect())
}

fn system_roots() -> Result<Vec<Vec<u8>>, TlsSetupError> {
    let certs: Vec<Vec<u8>> = system_certificates()
        .into_iter()
        .map(|cert| cert.as_ref().to_vec())
        .collect();
    debug!(count = certs.len(), "Loaded the system trust store.");
    if certs.is_empty() {
        return Err(TlsSetupError::NoSystemRoots);
    }
    Ok(certs)
}
