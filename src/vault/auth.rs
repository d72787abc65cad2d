//! Logging in: the login settings (`ROTOR_VAULT_*` and their flags), checked into a
//! [`VaultAuth`], and one Kubernetes or AppRole login that installs the token Vault
//! returns. The credential files are read at each login and never logged.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::time::Instant;

use super::keeper::{TokenLease, auth_lease};
use super::{AuthAs, Vault, VaultError};

/// Environment variable choosing the login method (`token`, `kubernetes`, `approle`).
pub const ENV_AUTH_METHOD: &str = "ROTOR_VAULT_AUTH_METHOD";
/// Environment variable naming the Vault role of the Kubernetes auth method.
pub const ENV_ROLE: &str = "ROTOR_VAULT_ROLE";
/// Environment variable naming the mount path of the auth method.
pub const ENV_AUTH_MOUNT: &str = "ROTOR_VAULT_AUTH_MOUNT";
/// Environment variable naming the file holding the Kubernetes ServiceAccount token.
pub const ENV_JWT_FILE: &str = "ROTOR_VAULT_JWT_FILE";
/// Environment variable naming the file holding the AppRole role id.
pub const ENV_ROLE_ID_FILE: &str = "ROTOR_VAULT_ROLE_ID_FILE";
/// Environment variable naming the file holding the AppRole secret id.
pub const ENV_SECRET_ID_FILE: &str = "ROTOR_VAULT_SECRET_ID_FILE";
/// Where a pod's ServiceAccount token is mounted.
pub const DEFAULT_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// How rotor obtains its Vault token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token given directly: `VAULT_TOKEN`, `~/.vault-token` or `--vault-token-file`.
    /// It is renewed while the agent runs when it is renewable.
    #[default]
    Token,
    /// Log in with the pod's ServiceAccount token (`POST auth/<mount>/login {role, jwt}`).
    Kubernetes {
        /// The Vault role of the auth method.
        role: String,
        /// Mount path of the auth method (default `kubernetes`).
        mount: String,
        /// File holding the ServiceAccount JWT, read at each login (the kubelet
        /// refreshes it).
        jwt_file: PathBuf,
    },
    /// Log in with a role id and a secret id (`POST auth/<mount>/login {role_id,
    /// secret_id}`); both files are read again at each login.
    AppRole {
        /// Mount path of the auth method (default `approle`).
        mount: String,
        /// File holding the role id.
        role_id_file: PathBuf,
        /// File holding the secret id.
        secret_id_file: PathBuf,
    },
}

impl VaultAuth {
    /// The method's name as `ROTOR_VAULT_AUTH_METHOD` spells it.
    pub fn method(&self) -> &'static str {
        match self {
            VaultAuth::Token => "token",
            VaultAuth::Kubernetes { .. } => "kubernetes",
            VaultAuth::AppRole { .. } => "approle",
        }
    }

    /// The auth mount of a login method (`None` for a given token).
    pub fn mount(&self) -> Option<&str> {
        match self {
            VaultAuth::Token => None,
            VaultAuth::Kubernetes { mount, .. } | VaultAuth::AppRole { mount, .. } => Some(mount),
        }
    }
}

/// The login settings as given (environment, then flags), before they are checked
/// by [`VaultAuthSettings::build`]. Nothing here is secret: the credentials stay in
/// their files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaultAuthSettings {
    /// `ROTOR_VAULT_AUTH_METHOD` / `--vault-auth-method` (default `token`).
    pub method: Option<String>,
    /// `ROTOR_VAULT_ROLE` / `--vault-role` (Kubernetes).
    pub role: Option<String>,
    /// `ROTOR_VAULT_AUTH_MOUNT` / `--vault-auth-mount`.
    pub mount: Option<String>,
    /// `ROTOR_VAULT_JWT_FILE` (Kubernetes; default [`DEFAULT_JWT_FILE`]).
    pub jwt_file: Option<PathBuf>,
    /// `ROTOR_VAULT_ROLE_ID_FILE` (AppRole).
    pub role_id_file: Option<PathBuf>,
    /// `ROTOR_VAULT_SECRET_ID_FILE` (AppRole).
    pub secret_id_file: Option<PathBuf>,
}

impl VaultAuthSettings {
    /// Reads the `ROTOR_VAULT_*` login variables (empty values count as unset).
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`VaultAuthSettings::from_env`], with another source of variables.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        VaultAuthSettings {
            method: var(ENV_AUTH_METHOD),
            role: var(ENV_ROLE),
            mount: var(ENV_AUTH_MOUNT),
            jwt_file: var(ENV_JWT_FILE).map(PathBuf::from),
            role_id_file: var(ENV_ROLE_ID_FILE).map(PathBuf::from),
            secret_id_file: var(ENV_SECRET_ID_FILE).map(PathBuf::from),
        }
    }

    /// Checks the settings: a known method and every piece it needs. The error names
    /// the variable (and flag) to set. Does not read the credential files (a login
    /// does, each time).
    pub fn build(&self) -> Result<VaultAuth, VaultError> {
        let method = self.method.as_deref().unwrap_or("token");
        let mount = |default: &str| -> Result<String, VaultError> {
            match self.mount.as_deref() {
                None => Ok(default.to_owned()),
                Some(m) => {
                    let m = m.trim_matches('/');
                    if m.is_empty() || m.contains(char::is_whitespace) {
                        return Err(VaultError::Config(format!(
                            "{ENV_AUTH_MOUNT} (--vault-auth-mount) {m:?} is not a mount path"
                        )));
                    }
                    // Accept `auth/approle` as well as `approle`.
                    Ok(m.strip_prefix("auth/").unwrap_or(m).to_owned())
                }
            }
        };
        match method {
            "token" => Ok(VaultAuth::Token),
            "kubernetes" => {
                let role = self.role.clone().ok_or_else(|| {
                    VaultError::Config(format!(
                        "Kubernetes auth needs the Vault role to log in as: set {ENV_ROLE} (or --vault-role)"
                    ))
                })?;
                Ok(VaultAuth::Kubernetes {
                    role,
                    mount: mount("kubernetes")?,
                    jwt_file: self
                        .jwt_file
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_JWT_FILE)),
                })
            }
            "approle" => {
                let needs = |file: &Option<PathBuf>, var: &str, what: &str| {
                    file.clone().ok_or_else(|| {
                        VaultError::Config(format!(
                            "AppRole auth needs the {what}: set {var} to the file holding it"
                        ))
                    })
                };
                Ok(VaultAuth::AppRole {
                    mount: mount("approle")?,
                    role_id_file: needs(&self.role_id_file, ENV_ROLE_ID_FILE, "role id")?,
                    secret_id_file: needs(&self.secret_id_file, ENV_SECRET_ID_FILE, "secret id")?,
                })
            }
            other => Err(VaultError::Config(format!(
                "{ENV_AUTH_METHOD} (--vault-auth-method) is {other:?}: expected token, kubernetes or approle"
            ))),
        }
    }
}

/// Reads one login credential from its file, trimmed. An empty file is an error.
fn read_credential(
    what: &'static str,
    variable: &'static str,
    path: &Path,
) -> Result<SecretString, VaultError> {
    let failed = |detail: String| VaultError::CredentialFile {
        what,
        variable,
        path: path.to_owned(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(failed("the file is empty".into()));
    }
    Ok(SecretString::from(value.to_owned()))
}

impl Vault {
    /// One login with the configured method; installs the new token.
    pub(super) async fn log_in(&self) -> Result<TokenLease, VaultError> {
        let (mount, body) = match &self.shared.auth {
            VaultAuth::Token => {
                return Err(VaultError::Config(
                    "a given token cannot log in again: set ROTOR_VAULT_AUTH_METHOD to kubernetes or approle".into(),
                ));
            }
            VaultAuth::Kubernetes {
                role,
                mount,
                jwt_file,
            } => {
                let jwt =
                    read_credential("Kubernetes service account token", ENV_JWT_FILE, jwt_file)?;
                (mount, json!({"role": role, "jwt": jwt.expose_secret()}))
            }
            VaultAuth::AppRole {
                mount,
                role_id_file,
                secret_id_file,
            } => {
                let role_id = read_credential("AppRole role id", ENV_ROLE_ID_FILE, role_id_file)?;
                let secret_id =
                    read_credential("AppRole secret id", ENV_SECRET_ID_FILE, secret_id_file)?;
                (
                    mount,
                    json!({"role_id": role_id.expose_secret(), "secret_id": secret_id.expose_secret()}),
                )
            }
        };
        let method = self.shared.auth.method();
        let failed = |detail: String| VaultError::Login {
            method,
            mount: mount.clone(),
            detail,
        };
        let granted = Instant::now();
        let resp = self
            .request(
                reqwest::Method::POST,
                &format!("auth/{mount}/login"),
                Some(&body),
                AuthAs::Anonymous,
            )
            .await
            .map_err(|e| match e {
                VaultError::Request { detail, .. } => failed(detail),
                other => other,
            })?;
        drop(body);
        if !resp.is_success() {
            return Err(failed(resp.status_detail()));
        }
        let json = resp.json();
        let token = json["auth"]["client_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(|t| SecretString::from(t.to_owned()))
            .ok_or_else(|| failed("the answer carries no auth.client_token".into()))?;
        let lease = auth_lease(&json, granted, None);
        self.install(token, lease)?;
        Ok(lease)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> VaultAuthSettings {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        VaultAuthSettings::from_lookup(|k| map.get(k).cloned())
    }

    fn config_error(pairs: &[(&str, &str)]) -> String {
        settings(pairs)
            .build()
            .expect_err("invalid settings")
            .to_string()
    }

    #[test]
    fn no_method_means_token() {
        assert_eq!(settings(&[]).build().unwrap(), VaultAuth::Token);
        assert_eq!(
            settings(&[(ENV_AUTH_METHOD, " ")]).build().unwrap(),
            VaultAuth::Token
        );
    }

    #[test]
    fn kubernetes_defaults_and_overrides() {
        let auth = settings(&[(ENV_AUTH_METHOD, "kubernetes"), (ENV_ROLE, "rotor")])
            .build()
            .unwrap();
        assert_eq!(
            auth,
            VaultAuth::Kubernetes {
                role: "rotor".into(),
                mount: "kubernetes".into(),
                jwt_file: PathBuf::from(DEFAULT_JWT_FILE),
            }
        );
        let auth = settings(&[
            (ENV_AUTH_METHOD, "kubernetes"),
            (ENV_ROLE, "rotor"),
            (ENV_AUTH_MOUNT, "/auth/k8s-prod/"),
            (ENV_JWT_FILE, "/tmp/jwt"),
        ])
        .build()
        .unwrap();
        assert_eq!(auth.mount(), Some("k8s-prod"));
        assert!(
            matches!(auth, VaultAuth::Kubernetes { jwt_file, .. } if jwt_file == Path::new("/tmp/jwt"))
        );
    }

    #[test]
    fn missing_pieces_name_the_variable() {
        let e = config_error(&[(ENV_AUTH_METHOD, "kubernetes")]);
        assert!(
            e.contains("ROTOR_VAULT_ROLE") && e.contains("--vault-role"),
            "{e}"
        );
        let e = config_error(&[(ENV_AUTH_METHOD, "approle")]);
        assert!(e.contains("ROTOR_VAULT_ROLE_ID_FILE"), "{e}");
        let e = config_error(&[(ENV_AUTH_METHOD, "approle"), (ENV_ROLE_ID_FILE, "/r")]);
        assert!(e.contains("ROTOR_VAULT_SECRET_ID_FILE"), "{e}");
        let e = config_error(&[(ENV_AUTH_METHOD, "ldap")]);
        assert!(
            e.contains("ROTOR_VAULT_AUTH_METHOD") && e.contains("\"ldap\""),
            "{e}"
        );
        let e = config_error(&[(ENV_AUTH_METHOD, "approle"), (ENV_AUTH_MOUNT, "//")]);
        assert!(e.contains("ROTOR_VAULT_AUTH_MOUNT"), "{e}");
    }
}
