//! The `vault-pki` target against the real OpenBao of `dev/stack up`. Every test mounts its
//! own PKI engine (own root CA, CRL and role), so tests share the server but nothing else.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use rotor::credentials::AuthOutcome;
use rotor::credentials::vault_pki::PkiTarget;
use rotor::policy::{CredentialSpec, VaultPkiCredential};
use rotor::secret::{SecretMap, SecretString};
use rotor::vault::{AuthAs, Vault, VaultConfig};
use rotor_testkit::{assert_no_secret, stack, unique};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

const COMMON_NAME: &str = "app.example.test";
const ALT_NAME: &str = "api.example.test";

fn vault() -> Vault {
    rotor::install_crypto_provider();
    let s = stack();
    let config = VaultConfig {
        addr: s.vault_addr.clone(),
        token: Some(SecretString::from(s.vault_token.clone())),
        ..VaultConfig::from_env()
    };
    Vault::connect(&config).expect("Vault client")
}

/// A PKI mount with its own root CA, CRL/issuing URLs and a role `web` for `*.example.test`.
struct Pki {
    vault: Vault,
    mount: String,
    /// The root CA certificate (PEM) as `root/generate/internal` returned it.
    root_pem: String,
}

impl Pki {
    async fn new() -> Pki {
        let mount = unique("pki");
        let root_cn = format!("{mount} Root CA");
        Pki::with_root(mount, &root_cn).await
    }

    /// A mount whose root CA is named `root_cn` (another mount's name makes an impostor).
    async fn with_root(mount: String, root_cn: &str) -> Pki {
        let vault = vault();
        let ok = |what: &str, r: Result<rotor::vault::RawResponse, rotor::vault::VaultError>| {
            r.unwrap_or_else(|e| panic!("{what}: {e}"))
        };
        ok(
            "mount",
            vault
                .request_ok(
                    Method::POST,
                    &format!("sys/mounts/{mount}"),
                    Some(&json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
                    AuthAs::Rotor,
                )
                .await,
        );
        let root = ok(
            "root",
            vault
                .request_ok(
                    Method::POST,
                    &format!("{mount}/root/generate/internal"),
                    Some(&json!({"common_name": root_cn, "ttl": "8760h"})),
                    AuthAs::Rotor,
                )
                .await,
        );
        let root_pem = root.json()["data"]["certificate"]
            .as_str()
            .expect("root certificate")
            .to_owned();
        let addr = vault.addr().to_owned();
        ok(
            "urls",
            vault
                .request_ok(
                    Method::POST,
                    &format!("{mount}/config/urls"),
                    Some(&json!({
                        "issuing_certificates": format!("{addr}/v1/{mount}/ca"),
                        "crl_distribution_points": format!("{addr}/v1/{mount}/crl"),
                    })),
                    AuthAs::Rotor,
                )
                .await,
        );
        ok(
            "role",
            vault
                .request_ok(
                    Method::POST,
                    &format!("{mount}/roles/web"),
                    Some(&json!({
                        "allowed_domains": "example.test",
                        "allow_subdomains": true,
                        "allow_ip_sans": true,
                        "max_ttl": "72h",
                    })),
                    AuthAs::Rotor,
                )
                .await,
        );
        Pki {
            vault,
            mount,
            root_pem,
        }
    }

    fn target(&self, ttl: &str) -> PkiTarget {
        PkiTarget::new(self.vault.clone(), &spec(&self.mount, ttl))
    }
}

/// The credential as a user writes it, through the real policy loader.
fn spec(mount: &str, ttl: &str) -> VaultPkiCredential {
    let yaml = format!(
        "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata: {{name: web-cert}}\nspec:\n  credential:\n    type: vault-pki\n    mount: {mount}\n    role: web\n    commonName: {COMMON_NAME}\n    altNames: [{ALT_NAME}]\n    ipSans: [127.0.0.1]\n    ttl: {ttl}\n    grace: 5m\n  vault: {{path: apps/web/cert}}\n"
    );
    let set = rotor::policy::load_str(Path::new("web-cert.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("{e}"));
    match &set.get("web-cert").expect("policy").spec.credential {
        CredentialSpec::VaultPki(c) => c.clone(),
        other => panic!("unexpected credential {}", other.kind()),
    }
}

fn pem_der(pem: &str) -> Vec<u8> {
    Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .expect("a PEM block")
        .expect("valid PEM")
        .contents
}

fn expose<'a>(value: &'a SecretMap, key: &str) -> &'a str {
    value
        .expose(key)
        .unwrap_or_else(|| panic!("value has no {key}"))
}

fn serial_of(value: &SecretMap) -> String {
    expose(value, "serial").to_owned()
}

fn assert_accepted(outcome: &AuthOutcome, what: &str) {
    assert!(
        matches!(outcome, AuthOutcome::Accepted),
        "{what}: {}",
        outcome.evidence()
    );
}

fn assert_unreachable(outcome: &AuthOutcome, what: &str) -> String {
    match outcome {
        AuthOutcome::Unreachable { reason } => reason.clone(),
        other => panic!("{what}: expected inconclusive, got {}", other.evidence()),
    }
}

#[tokio::test]
async fn issued_certificate_chains_to_the_ca_and_matches_its_key() {
    let pki = Pki::new().await;
    let target = pki.target("1h");
    let issued_at = SystemTime::now();
    let value = target.issue().await.expect("issue");
    assert_eq!(
        value.keys().collect::<Vec<_>>(),
        [
            "caChain",
            "certificate",
            "expiration",
            "privateKey",
            "serial"
        ]
    );

    let cert_der = pem_der(expose(&value, "certificate"));
    let (_, cert) = X509Certificate::from_der(&cert_der).expect("certificate parses");
    let chain_der = pem_der(expose(&value, "caChain"));
    let (_, ca) = X509Certificate::from_der(&chain_der).expect("caChain parses");
    let root_der = pem_der(&pki.root_pem);
    assert_eq!(chain_der, root_der, "caChain is the mount's root CA");
    cert.verify_signature(Some(ca.public_key()))
        .expect("the certificate is signed by the CA's key");
    assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw());

    let cn = cert.subject().iter_common_name().next().expect("CN");
    assert_eq!(cn.as_str().unwrap(), COMMON_NAME);
    let san = cert
        .subject_alternative_name()
        .expect("SAN parses")
        .expect("SAN present");
    let names = &san.value.general_names;
    assert!(names.contains(&GeneralName::DNSName(ALT_NAME)), "{names:?}");
    assert!(
        names.contains(&GeneralName::IPAddress(&[127u8, 0, 0, 1][..])),
        "{names:?}"
    );

    // The private key belongs to the certificate.
    let key = PrivateKeyDer::from_pem_slice(expose(&value, "privateKey").as_bytes())
        .expect("private key PEM");
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).expect("key");
    let certified =
        rustls::sign::CertifiedKey::new(vec![CertificateDer::from(cert_der.clone())], signing_key);
    certified
        .keys_match()
        .expect("private key matches the certificate");

    // Serial in Vault's colon form, expiration = notAfter ≈ now + ttl.
    let colon: Vec<String> = cert
        .raw_serial()
        .iter()
        .skip_while(|b| **b == 0)
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(serial_of(&value), colon.join(":"));
    let not_after = UNIX_EPOCH
        + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).unwrap());
    assert_eq!(PkiTarget::expiration(&value), Some(not_after));
    let expiration = chrono::DateTime::parse_from_rfc3339(expose(&value, "expiration"))
        .expect("expiration is RFC 3339");
    assert_eq!(expiration.offset().local_minus_utc(), 0, "UTC");
    assert!(expose(&value, "expiration").ends_with('Z'));
    let lifetime = not_after.duration_since(issued_at).unwrap();
    assert!(
        lifetime > Duration::from_secs(3500) && lifetime <= Duration::from_secs(3610),
        "lifetime {lifetime:?}"
    );

    // Without the expiration key, expiration() reads notAfter from the certificate.
    let mut bare = SecretMap::new();
    bare.insert(
        "certificate",
        SecretString::from(expose(&value, "certificate").to_owned()),
    );
    assert_eq!(PkiTarget::expiration(&bare), Some(not_after));

    assert_accepted(&target.check(&value).await, "fresh certificate");
}

#[tokio::test]
async fn overlap_then_revoke_rejects_only_the_old_serial() {
    let pki = Pki::new().await;
    let target = pki.target("1h");
    let old = target.issue().await.expect("issue old");
    let new = target.issue().await.expect("issue new");
    assert_ne!(serial_of(&old), serial_of(&new));

    // Overlap: both are valid side by side.
    assert_accepted(&target.check(&old).await, "old during overlap");
    assert_accepted(&target.check(&new).await, "new during overlap");

    target.revoke(&old).await.expect("revoke old");
    match target.check(&old).await {
        AuthOutcome::Rejected { code, message } => {
            assert_eq!(code, "crl");
            assert!(message.contains(&serial_of(&old)), "{message}");
            assert!(
                message.contains(&format!("CRL of {} Root CA", pki.mount)),
                "{message}"
            );
            assert!(message.contains("thisUpdate"), "{message}");
        }
        other => panic!("old after revoke: {}", other.evidence()),
    }
    assert_accepted(&target.check(&new).await, "new after revoking old");

    // Revoking again is harmless and changes nothing.
    target.revoke(&old).await.expect("revoke old twice");
    assert!(matches!(
        target.check(&old).await,
        AuthOutcome::Rejected { .. }
    ));
    assert_accepted(&target.check(&new).await, "new after second revoke");
}

#[tokio::test]
async fn certificate_from_another_mount_is_never_accepted() {
    let ours = Pki::new().await;
    // An impostor: another mount whose root CA has exactly our CA's name, but its own key.
    let theirs = Pki::with_root(unique("pki-impostor"), &format!("{} Root CA", ours.mount)).await;
    let target = ours.target("1h");
    let foreign = theirs.target("1h").issue().await.expect("issue elsewhere");
    let own = target.issue().await.expect("issue here");

    // Foreign certificate with its own CA: that chain is fine, but our mount's CRL is not
    // signed by that CA, so nothing can be concluded either way.
    let reason = assert_unreachable(&target.check(&foreign).await, "foreign cert");
    assert!(reason.contains("not signed by"), "{reason}");

    // Foreign certificate presented with our CA: same issuer name, but the signature
    // does not verify with our CA's key.
    let mut mixed = SecretMap::new();
    for (k, v) in foreign.iter() {
        mixed.insert(k, v.clone());
    }
    mixed.insert(
        "caChain",
        SecretString::from(expose(&own, "caChain").to_owned()),
    );
    let reason = assert_unreachable(&target.check(&mixed).await, "foreign cert, our CA");
    assert!(reason.contains("does not verify"), "{reason}");

    // A CA bundle that does not name the issuer at all.
    let stranger = Pki::new().await;
    let mut unrelated = own.clone();
    unrelated.insert("caChain", SecretString::from(stranger.root_pem.clone()));
    let reason = assert_unreachable(&target.check(&unrelated).await, "unrelated CA");
    assert!(reason.contains("not in caChain"), "{reason}");

    // Our certificate with a tampered serial claim is not taken at its word.
    let mut wrong_serial = own.clone();
    wrong_serial.insert("serial", SecretString::from("01:02:03"));
    assert_unreachable(&target.check(&wrong_serial).await, "serial mismatch");
    assert_accepted(&target.check(&own).await, "our own certificate");

    // Revoking a foreign serial on our mount is an error: it would stay valid.
    let err = target
        .revoke(&foreign)
        .await
        .expect_err("foreign serial is unknown here");
    assert_eq!(err.kind(), "pki_revoke");
    assert!(!err.is_transient());
    assert!(
        rotor::error_chain(&err).contains("not found"),
        "{}",
        rotor::error_chain(&err)
    );
    assert_accepted(
        &theirs.target("1h").check(&foreign).await,
        "foreign at home",
    );
}

#[tokio::test]
async fn unavailable_crl_is_inconclusive() {
    let pki = Pki::new().await;
    let value = pki.target("1h").issue().await.expect("issue");
    let missing = PkiTarget::new(pki.vault.clone(), &spec(&unique("no-such-pki"), "1h"));
    let reason = assert_unreachable(&missing.check(&value).await, "no CRL");
    assert!(reason.contains("CRL unavailable"), "{reason}");
}

#[tokio::test]
async fn expired_certificate_is_not_proof_of_revocation() {
    let pki = Pki::new().await;
    let target = pki.target("2s");
    let value = target.issue().await.expect("issue");
    let expiry = PkiTarget::expiration(&value).expect("expiration");
    // Wait for the certificate's own notAfter (a real condition with a deadline).
    let deadline = Instant::now() + Duration::from_secs(15);
    let outcome = loop {
        let outcome = target.check(&value).await;
        if SystemTime::now() > expiry + Duration::from_secs(1) {
            break outcome;
        }
        assert!(Instant::now() < deadline, "certificate never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reason = assert_unreachable(&outcome, "expired, not revoked");
    assert!(reason.contains("expired"), "{reason}");
    assert!(reason.contains("not proof of revocation"), "{reason}");
    // Vault keeps expired serials off the CRL; revoking is still fine (idempotent).
    target.revoke(&value).await.expect("revoke expired");
    assert_unreachable(&target.check(&value).await, "expired after revoke");
}

#[tokio::test]
async fn private_key_never_appears_in_errors_or_debug() {
    let pki = Pki::new().await;
    let target = pki.target("1h");
    let value = target.issue().await.expect("issue");
    let key_pem = expose(&value, "privateKey").to_owned();
    // The base64 lines of the key are the secret; the PEM armour is not.
    let key_lines: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();
    assert!(key_lines.len() > 3, "a real key");

    let mut output = String::new();
    output.push_str(&format!("{value:?}\n{target:?}\n"));
    output.push_str(&target.check(&value).await.evidence());
    target.revoke(&value).await.expect("revoke");
    output.push_str(&target.check(&value).await.evidence());
    // An error from each operation.
    let bad_role = {
        let mut s = spec(&pki.mount, "1h");
        s.role = "no-such-role".into();
        PkiTarget::new(pki.vault.clone(), &s)
    };
    let issue_err = bad_role.issue().await.expect_err("unknown role");
    assert_eq!(issue_err.kind(), "pki_issue");
    output.push_str(&format!(
        "{issue_err:?}\n{}\n",
        rotor::error_chain(&issue_err)
    ));
    let elsewhere = PkiTarget::new(pki.vault.clone(), &spec(&unique("no-such-pki"), "1h"));
    let revoke_err = elsewhere.revoke(&value).await.expect_err("no such mount");
    output.push_str(&format!(
        "{revoke_err:?}\n{}\n",
        rotor::error_chain(&revoke_err)
    ));
    output.push_str(&elsewhere.check(&value).await.evidence());
    let mut no_cert = value.clone();
    no_cert.insert("certificate", SecretString::from("garbage"));
    no_cert.insert("serial", SecretString::from(""));
    let invalid = target.revoke(&no_cert).await.expect_err("no certificate");
    output.push_str(&format!("{invalid:?}\n{}\n", rotor::error_chain(&invalid)));
    output.push_str(&target.check(&no_cert).await.evidence());

    assert!(output.contains("privateKey"), "the key name itself is fine");
    assert_no_secret(&output, &key_lines);
}
