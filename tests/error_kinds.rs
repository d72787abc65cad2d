//! The `kind()` labels of rotor's errors are metric label values: they must not change
//! when an error enum is edited. The labels sit next to each variant
//! (`#[strum(serialize = "…")]`); this table pins a few per enum, including the
//! variants that take the wrapped error's own label.

use std::path::PathBuf;

use rotor::audit::AuditError;
use rotor::consumers::ConsumerError;
use rotor::consumers::file::FileError;
use rotor::consumers::github::GithubError;
use rotor::consumers::gitlab::GitlabError;
use rotor::consumers::vault_kv::VaultKvError;
use rotor::credentials::CredentialError;
use rotor::credentials::http_api_key::HttpApiKeyError;
use rotor::credentials::mysql::MysqlError;
use rotor::credentials::postgres::PostgresError;
use rotor::credentials::rabbitmq::RabbitmqError;
use rotor::credentials::redis::RedisError;
use rotor::credentials::target::TlsSetupError;
use rotor::credentials::vault_database::DatabaseError;
use rotor::credentials::vault_pki::PkiError;
use rotor::credentials::vault_userpass::VaultAuthError;
use rotor::engine::EngineError;
use rotor::engine::history::HistoryError;
use rotor::engine::journal::JournalError;
use rotor::leader::LeaderError;
use rotor::notify::NotifyError;
use rotor::policy::TemplateError;
use rotor::server::AuthError;
use rotor::server::RemoteError;
use rotor::state::StateError;
use rotor::vault::VaultError;

fn s(text: &str) -> String {
    text.to_owned()
}

#[test]
fn credential_error_labels_are_pinned() {
    let labels = [
        (
            CredentialError::CannotRollBack("x").kind(),
            "cannot_roll_back",
        ),
        (
            CredentialError::Postgres(PostgresError::Tls(TlsSetupError::NoSystemRoots)).kind(),
            "no_system_roots",
        ),
        (
            PostgresError::RoleNotFound {
                role: s("r"),
                host: s("h"),
                port: 5432,
            }
            .kind(),
            "role_not_found",
        ),
        (
            MysqlError::InvalidAccountHost {
                account_host: s("%"),
                reason: "x",
            }
            .kind(),
            "invalid_account_host",
        ),
        (
            CredentialError::Redis(RedisError::LastPassword {
                user: s("u"),
                address: s("a"),
            })
            .kind(),
            "last_password",
        ),
        (RabbitmqError::EmptyUserName.kind(), "empty_user_name"),
        (
            CredentialError::Database(DatabaseError::Incomplete {
                role: s("r"),
                field: "f",
            })
            .kind(),
            "static_creds_incomplete",
        ),
        (
            DatabaseError::Postgres(PostgresError::EmptyPassword { role: s("r") }).kind(),
            "empty_password",
        ),
        (
            CredentialError::VaultAuth(VaultAuthError::Api {
                operation: s("o"),
                status: 400,
                errors: s("e"),
            })
            .kind(),
            "vault_api",
        ),
        (
            PkiError::InvalidValue { detail: s("d") }.kind(),
            "invalid_value",
        ),
        (
            HttpApiKeyError::ValueKeyMissing {
                key: "k",
                operation: "create",
            }
            .kind(),
            "missing_key",
        ),
        (
            HttpApiKeyError::Template {
                operation: "create",
                source: TemplateError::BadVariable { name: s("n") },
            }
            .kind(),
            "template_bad_variable",
        ),
    ];
    for (got, want) in labels {
        assert_eq!(got, want);
    }
}

#[test]
fn consumer_error_labels_are_pinned() {
    let path = PathBuf::from("/x");
    let labels = [
        (ConsumerError::KubeConfig(s("x")).kind(), "kube_config"),
        (
            ConsumerError::File(FileError::StillPresent { path }).kind(),
            "file_still_present",
        ),
        (
            ConsumerError::VaultKv(VaultKvError::Vault {
                location: s("l"),
                source: VaultError::NoToken,
            })
            .kind(),
            "vault_no_token",
        ),
        (
            ConsumerError::Github(GithubError::InvalidToken).kind(),
            "invalid_token",
        ),
        (
            GitlabError::InvalidUrl {
                url: s("u"),
                reason: "r",
            }
            .kind(),
            "invalid_url",
        ),
    ];
    for (got, want) in labels {
        assert_eq!(got, want);
    }
}

#[test]
fn engine_and_service_error_labels_are_pinned() {
    let path = PathBuf::from("/x");
    let labels = [
        (
            EngineError::RequestIncomplete {
                policy: s("p"),
                what: "w",
            }
            .kind(),
            "request_incomplete",
        ),
        (
            EngineError::Vault(VaultError::CasConflict {
                mount: s("m"),
                path: s("p"),
                expected: 1,
            })
            .kind(),
            "vault_cas_conflict",
        ),
        (
            EngineError::Journal(JournalError::Conflict { policy: s("p") }).kind(),
            "journal_conflict",
        ),
        (
            HistoryError::Reused {
                policy: s("p"),
                kind: s("k"),
            }
            .kind(),
            "reuse_refused",
        ),
        (
            StateError::Vault(VaultError::Config(s("c"))).kind(),
            "vault_config",
        ),
        (AuditError::NotAFile { path }.kind(), "audit_not_a_file"),
        (AuthError::TokenReview(s("t")).kind(), "token_review"),
        (RemoteError::Token.kind(), "remote_token"),
        (LeaderError::Empty.kind(), "lease_name"),
        (
            NotifyError::KeyShape { reference: s("r") }.kind(),
            "notify_key_shape",
        ),
    ];
    for (got, want) in labels {
        assert_eq!(got, want);
    }
}
