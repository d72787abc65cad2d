//! Certificates in a value, read without any I/O: the PEM blocks of a certificate
//! text and when the value's certificate expires. The `vault-pki` credential kind uses
//! them to check and issue certificates, the scheduler to tell when `renewBefore` is
//! reached.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use crate::secret::SecretMap;

/// Key of the PEM certificate in a value.
pub const CERTIFICATE: &str = "certificate";
/// Key of the expiry (RFC 3339, UTC) in a value.
pub const EXPIRATION: &str = "expiration";

/// When `value`'s certificate expires: its `expiration` key (RFC 3339, or Unix
/// seconds), else the certificate's `notAfter`. `None` when neither can be read.
pub fn expiration(value: &SecretMap) -> Option<SystemTime> {
    if let Some(text) = value.expose(EXPIRATION).map(str::trim)
        && !text.is_empty()
    {
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(t.with_timezone(&Utc).into());
        }
        if let Ok(secs) = text.parse::<u64>() {
            return Some(UNIX_EPOCH + Duration::from_secs(secs));
        }
    }
    let der = leaf_der(value.expose(CERTIFICATE)?).ok()?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// DER of the first certificate of a PEM text; the error says what is wrong with the
/// text (never its content).
pub fn leaf_der(pem: &str) -> Result<Vec<u8>, String> {
    certificate_ders(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| "the certificate is not a PEM certificate".to_owned())
}

/// DER of every `CERTIFICATE` block of a PEM text (other blocks are skipped).
pub fn certificate_ders(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| format!("invalid PEM: {e}"))?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    Ok(out)
}
