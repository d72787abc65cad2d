//! Vault/OpenBao PKI certificates (`vault-pki`, strategy `overlap`): a new certificate is
//! issued next to the old one, consumers are updated, and the old serial is revoked once
//! the grace period is over.
//!
//! - [`PkiTarget::issue`] sends `POST <mount>/issue/<role>` and returns the keys rotor
//!   writes to Vault: `certificate`, `privateKey`, `caChain`, `serial`, `expiration`.
//! - [`PkiTarget::revoke`] sends `POST <mount>/revoke` with the serial; revoking twice,
//!   or revoking an expired certificate, is not an error.
//! - [`PkiTarget::check`] is the "login" of a certificate: the chain up to the CA in
//!   `caChain` is verified (signatures with the issuer's public key, validity periods), then
//!   the issuer's CRL (`GET <mount>/crl`, fetched without a token) is verified against the
//!   same CA and searched for the serial. Only a serial listed on a correctly signed CRL is
//!   [`AuthOutcome::Rejected`] (code `crl`); an expired certificate that is not listed, a bad
//!   chain or an unavailable CRL is [`AuthOutcome::Unreachable`], because none of them
//!   proves the certificate revoked.
//!
//! The certificate, its serial and the CA are public; the private key is secret and only
//! ever lives in a [`SecretString`] (errors and `Debug` never carry it).
//!
//! Limitation: the CRL read is the mount's default issuer's. A certificate issued by an
//! issuer that is no longer the mount's default fails the CRL signature check and is
//! reported as [`AuthOutcome::Unreachable`] (never wrongly accepted or rejected).

use std::fmt;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use tracing::{debug, info, warn};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::time::ASN1Time;
use zeroize::Zeroize;

use super::adapters::IssuingTarget;
use super::target::wipe_json;
use super::{AuthOutcome, CredentialError};
pub use crate::cert::{CERTIFICATE, EXPIRATION};
use crate::cert::{certificate_ders, leaf_der};
use crate::policy::VaultPkiCredential;
use crate::secret::{SecretMap, SecretString};
use crate::vault::{AuthAs, Vault, VaultError};

/// Key of the PEM private key in a value (the only secret one).
pub const PRIVATE_KEY: &str = "privateKey";
/// Key of the PEM CA bundle in a value.
pub const CA_CHAIN: &str = "caChain";
/// Key of the serial (Vault's colon hex form, e.g. `46:b3:…`) in a value.
pub const SERIAL: &str = "serial";

/// Errors of the PKI target. None of them carries the private key.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum PkiError {
    /// A value given to [`PkiTarget::revoke`] lacks a key.
    #[error("the certificate value has no {key:?} key")]
    #[strum(serialize = "missing_key")]
    MissingKey {
        /// The missing key.
        key: &'static str,
    },
    /// A value's certificate cannot be read.
    #[error("the certificate value is unusable: {detail}")]
    #[strum(serialize = "invalid_value")]
    InvalidValue {
        /// What is wrong (never key material).
        detail: String,
    },
    /// `POST <mount>/issue/<role>` failed.
    #[error("issuing a certificate for {common_name:?} from {mount}/issue/{role} failed")]
    #[strum(serialize = "pki_issue")]
    Issue {
        /// PKI mount.
        mount: String,
        /// PKI role.
        role: String,
        /// Requested common name.
        common_name: String,
        /// Vault's answer or the transport failure.
        #[source]
        source: Box<VaultError>,
    },
    /// The issue response lacks a field or holds an unexpected one.
    #[error("{mount}/issue/{role} answered without a usable {field:?}")]
    #[strum(serialize = "pki_issue_response")]
    IssueResponse {
        /// PKI mount.
        mount: String,
        /// PKI role.
        role: String,
        /// The field of Vault's response.
        field: &'static str,
    },
    /// `POST <mount>/revoke` failed.
    #[error("revoking serial {serial} on {mount} failed")]
    #[strum(serialize = "pki_revoke")]
    Revoke {
        /// PKI mount.
        mount: String,
        /// The serial.
        serial: String,
        /// Vault's answer or the transport failure.
        #[source]
        source: Box<VaultError>,
    },
}

impl PkiError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PkiError::Issue { source, .. } | PkiError::Revoke { source, .. }
                if source.is_timeout() =>
            {
                "timeout"
            }
            other => other.into(),
        }
    }

    /// Whether trying again later may succeed (network trouble, Vault 5xx or 429).
    pub fn is_transient(&self) -> bool {
        match self {
            PkiError::Issue { source, .. } | PkiError::Revoke { source, .. } => {
                source.is_transient()
            }
            _ => false,
        }
    }
}

/// A PKI role on a Vault mount, ready to issue, revoke and check certificates.
#[derive(Clone)]
pub struct PkiTarget {
    vault: Vault,
    mount: String,
    role: String,
    common_name: String,
    alt_names: Vec<String>,
    ip_sans: Vec<std::net::IpAddr>,
    ttl: Duration,
}

impl fmt::Debug for PkiTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PkiTarget")
            .field("vault", &self.vault)
            .field("mount", &self.mount)
            .field("role", &self.role)
            .field("common_name", &self.common_name)
            .field("alt_names", &self.alt_names)
            .field("ip_sans", &self.ip_sans)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl PkiTarget {
    /// A target for `spec`'s role on `spec`'s mount. No I/O.
    pub fn new(vault: Vault, spec: &VaultPkiCredential) -> Self {
        PkiTarget {
            vault,
            mount: spec.mount.trim_matches('/').to_owned(),
            role: spec.role.clone(),
            common_name: spec.common_name.clone(),
            alt_names: spec.alt_names.clone(),
            ip_sans: spec.ip_sans.clone(),
            ttl: spec.ttl,
        }
    }

    /// The PKI mount.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// Issues a new certificate: `POST <mount>/issue/<role>` with `common_name`,
    /// `alt_names`, `ip_sans` and `ttl`. Returns a value with the keys `certificate`
    /// (PEM), `privateKey` (PEM), `caChain` (PEM bundle: Vault's `ca_chain`, else its
    /// `issuing_ca`), `serial` (Vault's colon hex form) and `expiration` (RFC 3339, UTC).
    pub async fn issue(&self) -> Result<SecretMap, PkiError> {
        let mut body = json!({
            "common_name": self.common_name,
            "ttl": format!("{}s", self.ttl.as_secs().max(1)),
            "format": "pem",
        });
        if !self.alt_names.is_empty() {
            body["alt_names"] = Value::String(self.alt_names.join(","));
        }
        if !self.ip_sans.is_empty() {
            let ips: Vec<String> = self.ip_sans.iter().map(ToString::to_string).collect();
            body["ip_sans"] = Value::String(ips.join(","));
        }
        let path = format!("{}/issue/{}", self.mount, self.role);
        let resp = self
            .vault
            .request_ok(Method::POST, &path, Some(&body), AuthAs::Rotor)
            .await
            .map_err(|source| PkiError::Issue {
                mount: self.mount.clone(),
                role: self.role.clone(),
                common_name: self.common_name.clone(),
                source: Box::new(source),
            })?;
        let mut json = resp.json();
        // The body holds the private key: wipe our copy once parsed (best effort; it is
        // only possible while no one else shares the buffer).
        if let Ok(mut raw) = resp.body.try_into_mut() {
            raw.as_mut().zeroize();
        }
        let value = self.value_from_issue(&json);
        wipe_json(&mut json);
        let value = value?;
        info!(
            mount = %self.mount,
            role = %self.role,
            common_name = %self.common_name,
            serial = value.expose(SERIAL).unwrap_or_default(),
            expiration = value.expose(EXPIRATION).unwrap_or_default(),
            "Certificate issued."
        );
        Ok(value)
    }

    fn value_from_issue(&self, json: &Value) -> Result<SecretMap, PkiError> {
        let missing = |field| PkiError::IssueResponse {
            mount: self.mount.clone(),
            role: self.role.clone(),
            field,
        };
        let data = json.get("data").ok_or_else(|| missing("data"))?;
        let text = |field: &'static str| {
            data.get(field)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| missing(field))
        };
        let certificate = text("certificate")?;
        let private_key = text("private_key")?;
        let serial = text("serial_number")?;
        let chain: Vec<&str> = data
            .get("ca_chain")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let ca_chain = if chain.is_empty() {
            text("issuing_ca")?.to_owned()
        } else {
            chain.join("\n")
        };
        let expiration = data
            .get("expiration")
            .and_then(Value::as_i64)
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
            .ok_or_else(|| missing("expiration"))?;
        let mut value = SecretMap::new();
        value.insert(CERTIFICATE, SecretString::from(certificate.to_owned()));
        value.insert(PRIVATE_KEY, SecretString::from(private_key.to_owned()));
        value.insert(CA_CHAIN, SecretString::from(ca_chain));
        value.insert(SERIAL, SecretString::from(serial.to_owned()));
        value.insert(
            EXPIRATION,
            SecretString::from(expiration.to_rfc3339_opts(SecondsFormat::Secs, true)),
        );
        Ok(value)
    }

    /// Revokes `value`'s certificate: `POST <mount>/revoke` with its serial (the `serial`
    /// key, else the certificate's). Idempotent: an already revoked serial answers 200,
    /// an expired certificate answers 200 with a warning (Vault keeps expired serials off
    /// the CRL), and an expired certificate Vault no longer knows (tidied) is fine too. A
    /// serial unknown to the mount while the certificate is still valid is an error: it
    /// was issued elsewhere and stays valid.
    pub async fn revoke(&self, value: &SecretMap) -> Result<(), PkiError> {
        let serial = match value.expose(SERIAL).filter(|s| !s.is_empty()) {
            Some(s) => s.to_owned(),
            None => {
                let pem = value
                    .expose(CERTIFICATE)
                    .ok_or(PkiError::MissingKey { key: CERTIFICATE })?;
                let der = leaf_der(pem).map_err(|detail| PkiError::InvalidValue { detail })?;
                let (_, cert) =
                    X509Certificate::from_der(&der).map_err(|e| PkiError::InvalidValue {
                        detail: format!("cannot parse the certificate: {e}"),
                    })?;
                colon_hex(cert.raw_serial())
            }
        };
        let path = format!("{}/revoke", self.mount);
        let body = json!({ "serial_number": serial });
        let err = |source| PkiError::Revoke {
            mount: self.mount.clone(),
            serial: serial.clone(),
            source: Box::new(source),
        };
        let resp = self
            .vault
            .request(Method::POST, &path, Some(&body), AuthAs::Rotor)
            .await
            .map_err(err)?;
        if resp.is_success() {
            let json = resp.json();
            let warnings: Vec<&str> = json
                .get("warnings")
                .and_then(Value::as_array)
                .map(|w| w.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if warnings.is_empty() {
                info!(mount = %self.mount, serial = %serial, "Certificate revoked.");
            } else {
                info!(mount = %self.mount, serial = %serial, warnings = %warnings.join("; "),
                    "Certificate revocation answered with warnings.");
            }
            return Ok(());
        }
        let errors = resp.errors();
        if resp.status == 400 && errors.contains("not found") && expired(value) == Some(true) {
            info!(mount = %self.mount, serial = %serial,
                "Certificate expired and no longer known to Vault; nothing to revoke.");
            return Ok(());
        }
        Err(err(VaultError::Request {
            operation: format!("POST {path}"),
            detail: if errors.is_empty() {
                format!("HTTP {}", resp.status)
            } else {
                format!("HTTP {}: {errors}", resp.status)
            },
        }))
    }

    /// The "login" of a certificate. Verifies that `certificate` chains to the CA in
    /// `caChain` (each signature checked with its issuer's public key, every certificate
    /// on the path inside its validity period), fetches the issuer's CRL
    /// (`GET <mount>/crl`, DER, no token), verifies the CRL's signature with the same CA
    /// and looks for the serial.
    ///
    /// - serial listed → [`AuthOutcome::Rejected`] with code `crl` and the message
    ///   `serial <s> revoked at <time> (CRL of <issuer CN>, thisUpdate <t>)`;
    /// - valid and not listed → [`AuthOutcome::Accepted`];
    /// - anything else (bad chain, CRL unavailable or not signed by the issuer, an
    ///   expired or not yet valid certificate that is not listed) →
    ///   [`AuthOutcome::Unreachable`]: expiry is not proof of revocation.
    pub async fn check(&self, value: &SecretMap) -> AuthOutcome {
        let outcome = self.try_check(value).await;
        match &outcome {
            AuthOutcome::Accepted => debug!(mount = %self.mount, "Certificate accepted."),
            AuthOutcome::Rejected { message, .. } => {
                debug!(mount = %self.mount, message = %message, "Certificate revoked.")
            }
            AuthOutcome::Unreachable { reason } => {
                warn!(mount = %self.mount, reason = %reason, "Certificate check inconclusive.")
            }
        }
        outcome
    }

    async fn try_check(&self, value: &SecretMap) -> AuthOutcome {
        let unreachable = |reason: String| AuthOutcome::Unreachable { reason };
        let Some(cert_pem) = value.expose(CERTIFICATE) else {
            return unreachable("the value has no certificate".into());
        };
        let Some(chain_pem) = value.expose(CA_CHAIN) else {
            return unreachable("the value has no caChain".into());
        };
        let leaf_der = match leaf_der(cert_pem) {
            Ok(der) => der,
            Err(reason) => return unreachable(reason),
        };
        let chain_ders = match certificate_ders(chain_pem) {
            Ok(ders) if ders.is_empty() => {
                return unreachable("caChain holds no PEM certificate".into());
            }
            Ok(ders) => ders,
            Err(reason) => return unreachable(format!("caChain: {reason}")),
        };
        let leaf = match X509Certificate::from_der(&leaf_der) {
            Ok((_, c)) => c,
            Err(e) => return unreachable(format!("cannot parse the certificate: {e}")),
        };
        let mut chain = Vec::with_capacity(chain_ders.len());
        for der in &chain_ders {
            match X509Certificate::from_der(der) {
                Ok((_, c)) => chain.push(c),
                Err(e) => return unreachable(format!("cannot parse a caChain certificate: {e}")),
            }
        }
        let serial = colon_hex(leaf.raw_serial());
        if let Some(stated) = value.expose(SERIAL).filter(|s| !s.is_empty())
            && normalize_serial(stated) != normalize_serial(&serial)
        {
            return unreachable(format!(
                "the value's serial {stated} is not the certificate's serial {serial}"
            ));
        }
        let issuer = match verify_chain(&leaf, &chain) {
            Ok(issuer) => issuer,
            Err(reason) => return unreachable(format!("certificate {serial}: {reason}")),
        };
        let issuer_cn = common_name(issuer);

        let path = format!("{}/crl", self.mount);
        let resp = match self
            .vault
            .request(Method::GET, &path, None, AuthAs::Anonymous)
            .await
        {
            Ok(r) => r,
            Err(e) => return unreachable(format!("CRL unavailable: {}", crate::error_chain(&e))),
        };
        if !resp.is_success() {
            let errors = resp.errors();
            return unreachable(if errors.is_empty() {
                format!("CRL unavailable: GET {path} answered HTTP {}", resp.status)
            } else {
                format!(
                    "CRL unavailable: GET {path} answered HTTP {}: {errors}",
                    resp.status
                )
            });
        }
        let crl = match CertificateRevocationList::from_der(&resp.body) {
            Ok((_, crl)) => crl,
            Err(e) => return unreachable(format!("cannot parse the CRL from {path}: {e}")),
        };
        if crl.issuer().as_raw() != leaf.issuer().as_raw()
            || crl.verify_signature(issuer.public_key()).is_err()
        {
            return unreachable(format!(
                "the CRL at {path} (issuer {}) is not signed by the certificate's issuer {issuer_cn}; \
                 the certificate may come from another mount or an issuer that is no longer the default",
                crl.issuer()
            ));
        }
        let this_update = rfc3339(crl.last_update());
        if let Some(next) = crl.next_update()
            && next < ASN1Time::now()
        {
            warn!(mount = %self.mount, next_update = %rfc3339(next),
                "The issuer's CRL is past its nextUpdate.");
        }
        let wanted = trim_zeros(leaf.raw_serial());
        if let Some(entry) = crl
            .iter_revoked_certificates()
            .find(|r| trim_zeros(r.raw_serial()) == wanted)
        {
            return AuthOutcome::Rejected {
                code: "crl".into(),
                message: format!(
                    "serial {serial} revoked at {} (CRL of {issuer_cn}, thisUpdate {this_update})",
                    rfc3339(entry.revocation_date)
                ),
            };
        }
        let validity = leaf.validity();
        let now = ASN1Time::now();
        if now > validity.not_after {
            return unreachable(format!(
                "certificate {serial} expired at {} and is not on the CRL of {issuer_cn} \
                 (thisUpdate {this_update}); expiry is not proof of revocation",
                rfc3339(validity.not_after)
            ));
        }
        if now < validity.not_before {
            return unreachable(format!(
                "certificate {serial} is not valid before {}",
                rfc3339(validity.not_before)
            ));
        }
        AuthOutcome::Accepted
    }

    /// When `value`'s certificate expires: its `expiration` key (RFC 3339, or Unix
    /// seconds), else the certificate's `notAfter`. `None` when neither can be read.
    /// Used by the scheduler's `renewBefore`.
    pub fn expiration(value: &SecretMap) -> Option<SystemTime> {
        crate::cert::expiration(value)
    }
}

/// Whether `value`'s certificate has expired (`None` when that cannot be told).
fn expired(value: &SecretMap) -> Option<bool> {
    PkiTarget::expiration(value).map(|t| t < SystemTime::now())
}

/// Finds the path from `leaf` up through `chain` and returns the leaf's direct issuer.
/// Each link must be a CA certificate whose subject is the child's issuer and whose key
/// verifies the child's signature; every certificate on the path must be inside its
/// validity period. The walk ends at a self-issued certificate or at the last issuer
/// found in `chain` (a bundle may stop at an intermediate).
fn verify_chain<'c, 'a>(
    leaf: &X509Certificate<'a>,
    chain: &'c [X509Certificate<'a>],
) -> Result<&'c X509Certificate<'a>, String> {
    let now = ASN1Time::now();
    let mut direct: Option<&'c X509Certificate<'a>> = None;
    let mut child = leaf;
    for _ in 0..chain.len() {
        let by_name: Vec<&'c X509Certificate<'a>> = chain
            .iter()
            .filter(|c| c.subject().as_raw() == child.issuer().as_raw())
            .collect();
        if by_name.is_empty() {
            if direct.is_some() {
                // The bundle stops at an intermediate: it is the CA we were given.
                break;
            }
            return Err(format!("its issuer {} is not in caChain", child.issuer()));
        }
        let Some(parent) = by_name
            .into_iter()
            .find(|p| child.verify_signature(Some(p.public_key())).is_ok())
        else {
            return Err(format!(
                "the signature of {} does not verify with the key of {} in caChain",
                child.subject(),
                child.issuer()
            ));
        };
        if !parent.is_ca() {
            return Err(format!(
                "{} in caChain is not a CA certificate",
                parent.subject()
            ));
        }
        if !parent.validity().is_valid_at(now) {
            return Err(format!(
                "the CA {} is outside its validity period ({} to {})",
                parent.subject(),
                rfc3339(parent.validity().not_before),
                rfc3339(parent.validity().not_after)
            ));
        }
        direct.get_or_insert(parent);
        if parent.subject().as_raw() == parent.issuer().as_raw() {
            // A root: its self-signature proves nothing more.
            break;
        }
        child = parent;
    }
    direct.ok_or_else(|| "no issuer found in caChain".to_owned())
}

/// The first common name of the certificate's subject, else the whole subject.
fn common_name(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| cert.subject().to_string())
}

/// Serial bytes without leading zero bytes (DER adds one when the high bit is set).
fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Vault's serial form: lower-case hex pairs joined by `:`, no leading zero bytes.
fn colon_hex(bytes: &[u8]) -> String {
    let bytes = trim_zeros(bytes);
    if bytes.is_empty() {
        return "00".into();
    }
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A serial written as `aa:bb`, `aa-bb` or `AABB`, reduced to comparable hex digits.
fn normalize_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.to_owned()
    }
}

fn rfc3339(t: ASN1Time) -> String {
    DateTime::<Utc>::from_timestamp(t.timestamp(), 0)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| t.to_string())
}

/// Certificates have no sessions rotor can see: the default [`IssuingTarget::terminate`].
impl IssuingTarget for PkiTarget {
    async fn issue(
        &self,
        _current: &SecretMap,
        _rotation_id: &str,
    ) -> Result<SecretMap, CredentialError> {
        Ok(PkiTarget::issue(self).await?)
    }

    async fn revoke(&self, value: &SecretMap) -> Result<String, CredentialError> {
        PkiTarget::revoke(self, value).await?;
        Ok(format!(
            "certificate {} revoked",
            value.expose("serial").unwrap_or("?")
        ))
    }

    async fn login(&self, value: &SecretMap) -> AuthOutcome {
        self.check(value).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn serials_are_compared_in_any_form() {
        assert_eq!(colon_hex(&[0x00, 0x46, 0xb3, 0x0a]), "46:b3:0a");
        assert_eq!(colon_hex(&[]), "00");
        assert_eq!(normalize_serial("46:B3:0a"), normalize_serial("46-b3-0a"));
        assert_eq!(normalize_serial("00:46:b3:0a"), "46b30a");
        assert_ne!(normalize_serial("46:b3:0a"), normalize_serial("46:b3:0b"));
    }

    #[test]
    fn expiration_reads_rfc3339_and_unix_seconds() {
        let mut v = SecretMap::new();
        v.insert(EXPIRATION, SecretString::from("2030-01-02T03:04:05Z"));
        let t = PkiTarget::expiration(&v).unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_893_553_445
        );
        v.insert(EXPIRATION, SecretString::from("1893553445"));
        assert_eq!(PkiTarget::expiration(&v), Some(t));
        assert_eq!(PkiTarget::expiration(&SecretMap::new()), None);
    }

    #[test]
    fn json_wipe_reaches_nested_strings() {
        let mut v = json!({"data": {"private_key": "abc", "list": ["def"]}});
        wipe_json(&mut v);
        let text = v.to_string();
        assert!(!text.contains("abc") && !text.contains("def"), "{text}");
    }

    #[test]
    fn errors_have_kinds() {
        let e = PkiError::MissingKey { key: CERTIFICATE };
        assert_eq!(e.kind(), "missing_key");
        assert!(!e.is_transient());
    }
}
