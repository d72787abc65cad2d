//! Who calls the API: bearer-token and Kubernetes TokenReview authentication
//! ([`Authenticator`]), the identities it knows ([`Identity`]: grants, compromise,
//! groups, break-glass) and their rate limits (a token bucket per identity). The
//! `--auth-config` file they come from is read by `auth_config`.
//!
//! Configured tokens are kept only as SHA-256 digests; a presented token is hashed and
//! compared in constant time against every digest, without stopping at a match.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::auth_config::{AuthConfig, AuthError, Grants, MIN_TOKEN_LEN, RateLimit, ServiceAccount};
use crate::policy::Reference;
use crate::secret::{SecretString, constant_time_eq};
use crate::vault::{Vault, describe_reference, resolve_local};

/// How long a successful TokenReview is reused for the same token.
const REVIEW_CACHE_TTL: Duration = Duration::from_secs(60);

/// Most TokenReview results kept at once.
const REVIEW_CACHE_MAX: usize = 1024;

/// An identity the API knows, with what it may do. Holds no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `name` from the config; rotations it asks for have the actor `api:<name>`.
    pub name: String,
    /// What it may see and rotate.
    pub grants: Grants,
    /// Whether it may request compromise rotations.
    pub compromise: bool,
    /// Groups it belongs to (approver groups).
    pub groups: Vec<String>,
    /// Whether its compromise rotations skip approval (break-glass).
    pub break_glass: bool,
    /// Its request budget.
    pub rate_limit: RateLimit,
}

impl Identity {
    /// Whether it may see and rotate the policy `name` with `labels`.
    pub fn may_access(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.grants.allows(name, labels)
    }

    /// The rotation's actor for requests by this identity: `api:<name>`.
    pub fn actor(&self) -> String {
        format!("api:{}", self.name)
    }
}

/// How a caller was authenticated (one type for the whole program: the evidence of
/// every rotation a caller starts names it).
pub use crate::audit::AuthMethod;

/// The result of checking a bearer token.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// The token belongs to this identity.
    Known {
        /// The identity, with its grants.
        identity: Arc<Identity>,
        /// Whether a static token or a TokenReview said so.
        method: AuthMethod,
    },
    /// The token belongs to nobody rotor knows; `detail` says why (never the token).
    Unknown {
        /// For the audit record.
        detail: String,
    },
}

/// Asks something (the Kubernetes API) who a bearer token belongs to.
#[async_trait::async_trait]
pub trait TokenReviewer: Send + Sync + 'static {
    /// The authenticated username (`system:serviceaccount:NS:NAME`), or `None` when the
    /// token is not authenticated. Errors mean the question could not be answered.
    async fn review(&self, token: &SecretString) -> Result<Option<String>, AuthError>;
}

/// [`TokenReviewer`] over `authentication.k8s.io/v1` TokenReview (needs RBAC
/// `create` on `tokenreviews`, e.g. the `system:auth-delegator` ClusterRole).
#[derive(Clone)]
pub struct KubeTokenReviewer {
    client: kube::Client,
    audiences: Vec<String>,
}

impl KubeTokenReviewer {
    /// Reviews tokens with `client`; `audiences` empty means the API server's own.
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        KubeTokenReviewer { client, audiences }
    }
}

#[async_trait::async_trait]
impl TokenReviewer for KubeTokenReviewer {
    async fn review(&self, token: &SecretString) -> Result<Option<String>, AuthError> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.expose_secret().to_owned(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        // The answer echoes the token in `spec`: only `status` is read, nothing is printed.
        let mut answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::TokenReview(kube_error(&e)))?;
        {
            use zeroize::Zeroize;
            answer.spec.token.zeroize();
            let mut sent = review;
            sent.spec.token.zeroize();
        }
        let Some(status) = answer.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        Ok(status.user.and_then(|u| u.username))
    }
}

/// kube's error without anything from the request (kube errors carry the API
/// server's Status message and HTTP details, not the request body).
fn kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("HTTP {}: {}", status.code, status.message),
        other => {
            crate::outside::note(crate::outside::System::Kubernetes, other);
            crate::error_chain(other)
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Authenticates bearer tokens, holds identities and their rate-limit buckets.
pub struct Authenticator {
    identities: Vec<Arc<Identity>>,
    /// Hex SHA-256 of each static token, with the identity's index.
    digests: Vec<(String, usize)>,
    accounts: HashMap<ServiceAccount, usize>,
    reviewer: Option<Arc<dyn TokenReviewer>>,
    review_cache: Mutex<HashMap<String, (usize, Instant)>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "identities",
                &self.identities.iter().map(|i| &i.name).collect::<Vec<_>>(),
            )
            .field("static_tokens", &self.digests.len())
            .field("token_review", &self.reviewer.is_some())
            .finish()
    }
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Authenticator {
    /// An authenticator that knows nobody: every `/v1` request gets 401. For an agent
    /// started without `--auth-config`.
    pub fn deny_all() -> Authenticator {
        Authenticator::build(Vec::new(), Vec::new(), HashMap::new())
    }

    fn build(
        identities: Vec<Arc<Identity>>,
        digests: Vec<(String, usize)>,
        accounts: HashMap<ServiceAccount, usize>,
    ) -> Authenticator {
        Authenticator {
            identities,
            digests,
            accounts,
            reviewer: None,
            review_cache: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves every identity's token (`file`/`env` locally, `vault` through `vault`)
    /// and keeps only their digests. Fails on a missing, short or shared token.
    pub async fn from_config(
        config: &AuthConfig,
        vault: Option<&Vault>,
    ) -> Result<Authenticator, AuthError> {
        let mut identities = Vec::new();
        let mut digests: Vec<(String, usize)> = Vec::new();
        let mut accounts = HashMap::new();
        for (index, c) in config.identities.iter().enumerate() {
            identities.push(Arc::new(Identity {
                name: c.name.clone(),
                grants: c.grants.clone(),
                compromise: c.compromise,
                groups: c.groups.clone(),
                break_glass: c.break_glass,
                rate_limit: c.rate_limit,
            }));
            if let Some(account) = &c.service_account {
                accounts.insert(account.clone(), index);
            }
            let Some(reference) = &c.token_from else {
                continue;
            };
            let described = describe_reference(reference);
            let resolved = match (reference, vault) {
                (Reference::Vault { .. }, Some(vault)) => vault.resolve(reference).await,
                (Reference::Vault { .. }, None) => {
                    return Err(AuthError::NoVault {
                        identity: c.name.clone(),
                        reference: described,
                    });
                }
                _ => resolve_local(reference),
            }
            .map_err(|source| AuthError::Resolve {
                identity: c.name.clone(),
                reference: described.clone(),
                source: Box::new(source),
            })?;
            let token = match (resolved.len(), resolved.expose("value")) {
                (1, Some(token)) => token.trim(),
                _ => {
                    return Err(AuthError::NotSingleValue {
                        identity: c.name.clone(),
                        reference: described,
                    });
                }
            };
            let len = token.chars().count();
            if len < MIN_TOKEN_LEN {
                return Err(AuthError::TokenTooShort {
                    identity: c.name.clone(),
                    reference: described,
                    len,
                });
            }
            let d = digest(token);
            if let Some((_, other)) = digests.iter().find(|(x, _)| *x == d) {
                return Err(AuthError::DuplicateToken {
                    first: config.identities[*other].name.clone(),
                    second: c.name.clone(),
                });
            }
            digests.push((d, index));
        }
        Ok(Authenticator::build(identities, digests, accounts))
    }

    /// Adds Kubernetes TokenReview for tokens that match no static token.
    pub fn with_token_reviewer(mut self, reviewer: Arc<dyn TokenReviewer>) -> Authenticator {
        self.reviewer = Some(reviewer);
        self
    }

    /// Adds TokenReview through `client` ([`KubeTokenReviewer`], API server audience).
    pub fn with_kube(self, client: kube::Client) -> Authenticator {
        self.with_token_reviewer(Arc::new(KubeTokenReviewer::new(client, Vec::new())))
    }

    /// Identities, in configuration order.
    pub fn identities(&self) -> &[Arc<Identity>] {
        &self.identities
    }

    /// Who `token` belongs to. Static tokens first (every digest compared in constant
    /// time, no early exit); then, if a reviewer is set and some identity names a
    /// ServiceAccount, a TokenReview. Errors only when the review itself failed.
    pub async fn authenticate(&self, token: &str) -> Result<Authentication, AuthError> {
        let presented = digest(token);
        let mut found = None;
        for (d, index) in &self.digests {
            let equal = constant_time_eq(&presented, d);
            if equal && found.is_none() {
                found = Some(*index);
            }
        }
        if let Some(index) = found {
            return Ok(Authentication::Known {
                identity: Arc::clone(&self.identities[index]),
                method: AuthMethod::ApiToken,
            });
        }
        let Some(reviewer) = self.reviewer.as_ref().filter(|_| !self.accounts.is_empty()) else {
            return Ok(Authentication::Unknown {
                detail: "the bearer token matches no identity".into(),
            });
        };
        if let Some(index) = self.cached_review(&presented) {
            return Ok(Authentication::Known {
                identity: Arc::clone(&self.identities[index]),
                method: AuthMethod::KubernetesTokenReview,
            });
        }
        let secret = SecretString::from(token.to_owned());
        let Some(username) = reviewer.review(&secret).await? else {
            return Ok(Authentication::Unknown {
                detail:
                    "the bearer token matches no identity and Kubernetes did not authenticate it"
                        .into(),
            });
        };
        let Some(account) = ServiceAccount::from_username(&username) else {
            return Ok(Authentication::Unknown {
                detail: format!("Kubernetes user {username} is not a ServiceAccount"),
            });
        };
        let Some(&index) = self.accounts.get(&account) else {
            return Ok(Authentication::Unknown {
                detail: format!("ServiceAccount {account} is not a configured identity"),
            });
        };
        self.remember_review(presented, index);
        Ok(Authentication::Known {
            identity: Arc::clone(&self.identities[index]),
            method: AuthMethod::KubernetesTokenReview,
        })
    }

    fn cached_review(&self, digest: &str) -> Option<usize> {
        let cache = self.review_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(digest)
            .filter(|(_, at)| at.elapsed() < REVIEW_CACHE_TTL)
            .map(|(index, _)| *index)
    }

    fn remember_review(&self, digest: String, index: usize) {
        let mut cache = self.review_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= REVIEW_CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < REVIEW_CACHE_TTL);
            if cache.len() >= REVIEW_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, (index, Instant::now()));
    }

    /// Takes one request from `identity`'s bucket; `Err(wait)` when it is empty, with
    /// the time until the next request is allowed.
    pub fn check_rate(&self, identity: &Identity) -> Result<(), Duration> {
        self.check_rate_at(identity, Instant::now())
    }

    fn check_rate_at(&self, identity: &Identity, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(identity.rate_limit.requests.max(1));
        let per_second = capacity / identity.rate_limit.per.as_secs_f64().max(0.001);
        // A std mutex, held for a few arithmetic operations and never across an await.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(identity.name.clone()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(requests: u32, per: Duration) -> Authenticator {
        Authenticator::build(
            vec![Arc::new(Identity {
                name: "x".into(),
                grants: Grants::default(),
                compromise: false,
                groups: Vec::new(),
                break_glass: false,
                rate_limit: RateLimit { requests, per },
            })],
            Vec::new(),
            HashMap::new(),
        )
    }

    #[test]
    fn token_bucket_allows_a_burst_then_refills() {
        let auth = identity(3, Duration::from_secs(60));
        let id = Arc::clone(&auth.identities()[0]);
        let t0 = Instant::now();
        for _ in 0..3 {
            auth.check_rate_at(&id, t0).unwrap();
        }
        let wait = auth.check_rate_at(&id, t0).unwrap_err();
        assert_eq!(wait.as_secs_f64().round(), 20.0, "{wait:?}");
        let wait = auth
            .check_rate_at(&id, t0 + Duration::from_secs(15))
            .unwrap_err();
        assert_eq!(wait.as_secs_f64().round(), 5.0, "{wait:?}");
        let t1 = t0 + Duration::from_secs(20);
        auth.check_rate_at(&id, t1).unwrap();
        assert!(auth.check_rate_at(&id, t1).is_err());
        let t2 = t1 + Duration::from_secs(600);
        for _ in 0..3 {
            auth.check_rate_at(&id, t2).unwrap();
        }
        assert!(
            auth.check_rate_at(&id, t2).is_err(),
            "the bucket never holds more than 3"
        );
    }

    #[test]
    fn auth_methods_name_themselves() {
        assert_eq!(AuthMethod::ApiToken.as_str(), "api_token");
        assert_eq!(
            AuthMethod::KubernetesTokenReview.to_string(),
            "kubernetes_token_review"
        );
        for method in [AuthMethod::ApiToken, AuthMethod::KubernetesTokenReview] {
            let json = serde_json::to_string(&method).unwrap();
            assert_eq!(json, format!("\"{}\"", method.as_str()));
        }
        // The request audit records keep their labels.
        assert_eq!(AuthMethod::ApiToken.audit_label(), "token");
        assert_eq!(
            AuthMethod::KubernetesTokenReview.audit_label(),
            "kubernetes"
        );
    }
}
