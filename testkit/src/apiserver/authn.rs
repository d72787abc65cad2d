//! Authentication: bearer tokens to users, as the real kube-apiserver does it.
//!
//! - The kubeconfig's token (the server's admin token) is user `kubernetes-admin` in
//!   groups `system:masters` and `system:authenticated`: unrestricted, for building a
//!   test's world.
//! - ServiceAccount tokens are minted through the real API, a `TokenRequest`
//!   (`POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`), and authenticate as
//!   `system:serviceaccount:NS:NAME` in groups `system:serviceaccounts`,
//!   `system:serviceaccounts:NS` and `system:authenticated`. Like the real bound tokens
//!   they expire (`spec.expirationSeconds`, default one hour, at least ten minutes) and
//!   stop working when their ServiceAccount is deleted (or replaced: they are bound to
//!   its `uid`).
//!
//! A request without a token or with an unknown or invalid one gets `401 Unauthorized`.
//! Tokens never reach a log.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use http::Response;
use http::{HeaderValue, Method, StatusCode};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use serde_json::{Value, json};

use super::rbac::{AUTHENTICATED_GROUP, MASTERS_GROUP, UserInfo};
use super::{ReplyBody, json_response, random_token, status};

/// The admin token's user.
pub const ADMIN_USER: &str = "kubernetes-admin";

/// The audience of a token whose request names none (the API server's own).
const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Lifetime of a token whose request names none.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// The shortest lifetime the real server accepts.
const MIN_EXPIRATION_SECONDS: i64 = 600;

/// A minted ServiceAccount token: whose, bound to which object, until when.
struct Minted {
    namespace: String,
    name: String,
    uid: String,
    expires: DateTime<Utc>,
}

/// The server's tokens: the admin token and the ServiceAccount tokens minted so far.
pub(super) struct Authenticator {
    admin_token: String,
    minted: Mutex<HashMap<String, Minted>>,
}

impl Authenticator {
    /// An authenticator whose admin token is `admin_token`.
    pub(super) fn new(admin_token: String) -> Authenticator {
        Authenticator {
            admin_token,
            minted: Mutex::new(HashMap::new()),
        }
    }

    /// The user `authorization` (an `Authorization` header) authenticates as, or `None`
    /// (answer 401).
    pub(super) async fn authenticate(
        &self,
        backend: &kube::Client,
        authorization: Option<&HeaderValue>,
    ) -> Option<UserInfo> {
        let presented = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))?;
        if same_token(presented, &self.admin_token) {
            return Some(UserInfo {
                name: ADMIN_USER.into(),
                groups: vec![MASTERS_GROUP.into(), AUTHENTICATED_GROUP.into()],
            });
        }
        let (namespace, name, uid) = {
            let minted = self.minted.lock().unwrap_or_else(|e| e.into_inner());
            let token = minted.get(presented)?;
            if token.expires <= Utc::now() {
                return None;
            }
            (
                token.namespace.clone(),
                token.name.clone(),
                token.uid.clone(),
            )
        };
        // Bound to the ServiceAccount: deleting (or replacing) it ends the token.
        let account = Api::<ServiceAccount>::namespaced(backend.clone(), &namespace)
            .get_opt(&name)
            .await
            .ok()??;
        if account.metadata.uid.as_deref() != Some(uid.as_str()) {
            return None;
        }
        Some(service_account_user(&namespace, &name))
    }

    /// Answers a `TokenRequest` for ServiceAccount `namespace/name` with body `body`.
    pub(super) async fn token_request(
        &self,
        backend: &kube::Client,
        namespace: &str,
        name: &str,
        body: &[u8],
    ) -> Response<ReplyBody> {
        let request: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(value) => value,
                Err(error) => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("the TokenRequest is not JSON: {error}"),
                    );
                }
            }
        };
        let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
        let seconds = spec
            .get("expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        if seconds < MIN_EXPIRATION_SECONDS {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                &format!(
                    "TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"
                ),
            );
        }
        let audiences = spec
            .get("audiences")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .cloned()
            .unwrap_or_else(|| vec![json!(DEFAULT_AUDIENCE)]);
        let account = match Api::<ServiceAccount>::namespaced(backend.clone(), namespace)
            .get_opt(name)
            .await
        {
            Ok(Some(account)) => account,
            Ok(None) => {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("serviceaccounts \"{name}\" not found"),
                );
            }
            Err(error) => {
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &format!("reading the ServiceAccount failed: {error}"),
                );
            }
        };
        let token = random_token();
        let expires = Utc::now() + Duration::seconds(seconds);
        self.minted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.clone(),
                Minted {
                    namespace: namespace.into(),
                    name: name.into(),
                    uid: account.metadata.uid.unwrap_or_default(),
                    expires,
                },
            );
        json_response(
            StatusCode::CREATED,
            &json!({
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
                "spec": {
                    "audiences": audiences,
                    "expirationSeconds": seconds,
                    "boundObjectRef": spec.get("boundObjectRef").cloned().unwrap_or(Value::Null)
                },
                "status": {
                    "token": token,
                    "expirationTimestamp": expires.to_rfc3339_opts(SecondsFormat::Secs, true)
                }
            }),
        )
    }
}

/// The user a ServiceAccount's token authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            AUTHENTICATED_GROUP.into(),
        ],
    }
}

/// `(namespace, name)` of a TokenRequest: `POST …/namespaces/NS/serviceaccounts/NAME/token`.
pub(super) fn token_request_target<'p>(
    method: &Method,
    path: &'p str,
) -> Option<(&'p str, &'p str)> {
    if *method != Method::POST {
        return None;
    }
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        [
            "api",
            "v1",
            "namespaces",
            ns,
            "serviceaccounts",
            name,
            "token",
        ] => Some((ns, name)),
        _ => None,
    }
}

/// Compares without an early exit, so timing does not reveal a matching prefix.
fn same_token(presented: &str, token: &str) -> bool {
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_match_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("ab", "abc"));
        assert!(!same_token("", "abc"));
    }

    #[test]
    fn token_requests_are_recognised_by_method_and_path() {
        let path = "/api/v1/namespaces/rotor-system/serviceaccounts/prod-rotor/token";
        assert_eq!(
            token_request_target(&Method::POST, path),
            Some(("rotor-system", "prod-rotor"))
        );
        assert_eq!(token_request_target(&Method::GET, path), None);
        assert_eq!(
            token_request_target(&Method::POST, "/api/v1/namespaces/a/serviceaccounts/b"),
            None
        );
    }

    #[test]
    fn service_accounts_are_users_in_three_groups() {
        let user = service_account_user("ns", "sa");
        assert_eq!(user.name, "system:serviceaccount:ns:sa");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns",
                "system:authenticated"
            ]
        );
    }

    #[tokio::test]
    async fn the_admin_token_is_an_unrestricted_user() {
        let backend = super::super::backend(Vec::new()).await.unwrap();
        let auth = Authenticator::new("fake-admin".into());
        let header = HeaderValue::from_static("Bearer fake-admin");
        let admin = auth.authenticate(&backend, Some(&header)).await.unwrap();
        assert_eq!(admin.name, ADMIN_USER);
        assert!(admin.groups.iter().any(|g| g == MASTERS_GROUP));
        let wrong = HeaderValue::from_static("Bearer fake-admix");
        assert!(auth.authenticate(&backend, Some(&wrong)).await.is_none());
        let scheme = HeaderValue::from_static("Basic fake-admin");
        assert!(auth.authenticate(&backend, Some(&scheme)).await.is_none());
        assert!(auth.authenticate(&backend, None).await.is_none());
    }

    #[tokio::test]
    async fn an_expired_token_is_refused() {
        let backend = super::super::backend(vec![json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "app", "namespace": "default"}
        })])
        .await
        .unwrap();
        let auth = Authenticator::new("fake-admin".into());
        let minted = auth
            .token_request(
                &backend,
                "default",
                "app",
                br#"{"spec": {"expirationSeconds": 600}}"#,
            )
            .await;
        assert_eq!(minted.status(), StatusCode::CREATED);
        let token = {
            let tokens = auth.minted.lock().unwrap();
            assert_eq!(tokens.len(), 1);
            let (token, entry) = tokens.iter().next().unwrap();
            assert_eq!(
                (entry.namespace.as_str(), entry.name.as_str()),
                ("default", "app")
            );
            token.clone()
        };
        let header = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        let user = auth.authenticate(&backend, Some(&header)).await.unwrap();
        assert_eq!(user.name, "system:serviceaccount:default:app");
        auth.minted.lock().unwrap().get_mut(&token).unwrap().expires =
            Utc::now() - Duration::seconds(1);
        assert!(auth.authenticate(&backend, Some(&header)).await.is_none());
    }
}
