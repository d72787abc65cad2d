//! The on-demand API over real HTTP: authentication (static tokens, Kubernetes
//! TokenReview), authorisation, rate limits, fail-closed auditing, agent error mapping,
//! quarantine release and the CLI's client functions. The agent is a recording fake
//! `Control`; the server, the sockets and the HTTP clients are real.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rotor::agent::{
    Accepted, ApprovalCaller, ApprovalRecord, Control, ControlError, PolicyMeta, PolicyView,
    Readiness, RotationSummary,
};
use rotor::api::{BulkRotateBody, RotateBody};
use rotor::engine::{EnableOutcome, RetireRequest, Retirement, Rotation, RotationRequest, Trigger};
use rotor::secret::{SecretMap, SecretString};
use rotor::server::{
    AgentClient, AuditFn, AuthConfig, AuthError, Authenticator, KubeTokenReviewer, Outcome,
    RemoteError, RequestAudit, TokenReviewer, serve,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use url::Url;

// ---------------------------------------------------------------------------------------
// A recording fake agent

struct Policy {
    name: &'static str,
    labels: &'static [(&'static str, &'static str)],
    require_reason: bool,
    require_ticket: bool,
}

const POLICIES: &[Policy] = &[
    Policy {
        name: "payments-db",
        labels: &[("team", "payments"), ("tier", "db")],
        require_reason: true,
        require_ticket: false,
    },
    Policy {
        name: "payments-cache",
        labels: &[("team", "payments"), ("tier", "cache")],
        require_reason: true,
        require_ticket: false,
    },
    Policy {
        name: "orders-db",
        labels: &[("team", "orders"), ("tier", "db")],
        require_reason: true,
        require_ticket: true,
    },
    Policy {
        name: "shared-mq",
        labels: &[("team", "platform")],
        require_reason: false,
        require_ticket: false,
    },
];

fn labels(policy: &Policy) -> BTreeMap<String, String> {
    policy
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[derive(Default)]
struct FakeControl {
    calls: Mutex<Vec<(String, RotationRequest)>>,
    not_ready: AtomicBool,
    /// Answer for the next `rotate` call instead of accepting it.
    next_error: Mutex<Option<ControlError>>,
    rotations: Mutex<HashMap<String, Rotation>>,
    /// Policies in quarantine; `release` lifts one and answers Busy for any other.
    quarantined: Mutex<HashSet<String>>,
    /// Every `release` call: (policy, actor, reason).
    releases: Mutex<Vec<(String, String, String)>>,
}

impl FakeControl {
    fn calls(&self) -> Vec<(String, RotationRequest)> {
        self.calls.lock().unwrap().clone()
    }

    fn releases(&self) -> Vec<(String, String, String)> {
        self.releases.lock().unwrap().clone()
    }

    fn quarantine(&self, policy: &str) {
        self.quarantined.lock().unwrap().insert(policy.to_owned());
    }
}

fn rotation(id: &str, policy: &str, request: &RotationRequest) -> Rotation {
    serde_json::from_value(json!({
        "rotation_id": id,
        "policy": policy,
        "kind": "postgres",
        "strategy": "single",
        "trigger": request.trigger,
        "actor": request.asker.actor,
        "reason": request.reason,
        "ticket": request.ticket,
        "status": "open",
        "canonical": format!("secret/{policy}"),
        "canonical_version": 3,
        "staging": format!("secret/rotor/staging/{policy}/{id}"),
        "steps": [],
        "started_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
    }))
    .unwrap()
}

#[async_trait::async_trait]
impl Control for FakeControl {
    async fn policies(&self) -> Vec<PolicyView> {
        POLICIES
            .iter()
            .map(|p| PolicyView {
                name: p.name.into(),
                kind: "postgres".into(),
                labels: labels(p),
                state: "idle".into(),
                last_rotation: Some(RotationSummary {
                    rotation_id: "01J0000000000000000000PREV".into(),
                    status: "completed".into(),
                    trigger: "schedule".into(),
                    updated_at: "2025-01-01T00:00:00Z".into(),
                }),
                secret_created_at: None,
                age_seconds: Some(3600),
                next_due: None,
                pending_consumers: Vec::new(),
                error: None,
            })
            .collect()
    }

    fn policy_meta(&self, name: &str) -> Option<PolicyMeta> {
        POLICIES
            .iter()
            .find(|p| p.name == name)
            .map(|p| PolicyMeta {
                name: p.name.into(),
                labels: labels(p),
                require_reason: p.require_reason,
                require_ticket: p.require_ticket,
            })
    }

    async fn rotate(&self, name: &str, request: RotationRequest) -> Result<Accepted, ControlError> {
        self.calls
            .lock()
            .unwrap()
            .push((name.to_owned(), request.clone()));
        if let Some(e) = self.next_error.lock().unwrap().take() {
            return Err(e);
        }
        let id = ulid::Ulid::new().to_string();
        self.rotations
            .lock()
            .unwrap()
            .insert(id.clone(), rotation(&id, name, &request));
        Ok(Accepted {
            rotation_id: Some(id.into()),
            state: "queued".into(),
            ..Default::default()
        })
    }

    async fn rotation(&self, id: &str) -> Result<Option<Rotation>, ControlError> {
        Ok(self.rotations.lock().unwrap().get(id).cloned())
    }

    async fn release(&self, name: &str, actor: &str, reason: &str) -> Result<(), ControlError> {
        self.releases
            .lock()
            .unwrap()
            .push((name.to_owned(), actor.to_owned(), reason.to_owned()));
        if self.quarantined.lock().unwrap().remove(name) {
            Ok(())
        } else {
            Err(ControlError::Busy(format!(
                "policy {name} is not quarantined"
            )))
        }
    }

    /// This fake keeps no approval requests.
    async fn approval_request(&self, _id: &str) -> Result<Option<ApprovalRecord>, ControlError> {
        Ok(None)
    }

    async fn approve(
        &self,
        id: &str,
        _caller: &ApprovalCaller,
        _reason: Option<&str>,
    ) -> Result<Accepted, ControlError> {
        Err(ControlError::UnknownRequest(id.to_owned()))
    }

    async fn retire(&self, name: &str, _: RetireRequest) -> Result<Retirement, ControlError> {
        Err(ControlError::Busy(format!(
            "this agent cannot retire policy {name}"
        )))
    }

    async fn enable(&self, name: &str, _: RetireRequest) -> Result<EnableOutcome, ControlError> {
        Err(ControlError::Busy(format!(
            "this agent cannot enable policy {name}"
        )))
    }

    fn readiness(&self) -> Readiness {
        if self.not_ready.load(Ordering::SeqCst) {
            Readiness {
                ready: false,
                leader: false,
                reason: Some("policies not loaded yet".into()),
            }
        } else {
            Readiness {
                ready: true,
                leader: true,
                reason: None,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A fake TokenReview (kube-fake-client does not review tokens: it answers a TokenReview
// create with 422 "Object name is required", see `fake_kube_cannot_review_…` below)

#[derive(Default)]
struct FakeReviewer {
    /// token → username
    users: HashMap<String, String>,
    calls: AtomicUsize,
    fail: AtomicBool,
}

#[async_trait::async_trait]
impl TokenReviewer for FakeReviewer {
    async fn review(&self, token: &SecretString) -> Result<Option<String>, AuthError> {
        use secrecy::ExposeSecret;
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(AuthError::TokenReview("HTTP 500: etcd unavailable".into()));
        }
        Ok(self.users.get(token.expose_secret()).cloned())
    }
}

// ---------------------------------------------------------------------------------------
// Harness

struct Tokens {
    payments: String,
    orders: String,
    burst: String,
    /// A Kubernetes ServiceAccount token for ci/deployer (known to the fake reviewer).
    ci_sa: String,
    /// A ServiceAccount token for an account with no rotor identity.
    stranger_sa: String,
    /// A token nobody has.
    wrong: String,
}

impl Tokens {
    fn all(&self) -> Vec<&str> {
        vec![
            &self.payments,
            &self.orders,
            &self.burst,
            &self.ci_sa,
            &self.stranger_sa,
            &self.wrong,
        ]
    }
}

struct Harness {
    base: Url,
    http: reqwest::Client,
    control: Arc<FakeControl>,
    reviewer: Arc<FakeReviewer>,
    audits: Arc<Mutex<Vec<RequestAudit>>>,
    fail_audit: Arc<AtomicBool>,
    tokens: Tokens,
    /// Everything the server answered (status line, headers, body), for the leak check.
    transcript: Mutex<String>,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Harness {
    async fn start() -> Harness {
        rotor::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens {
            payments: rotor_testkit::canary(),
            orders: rotor_testkit::canary(),
            burst: rotor_testkit::canary(),
            ci_sa: rotor_testkit::canary(),
            stranger_sa: rotor_testkit::canary(),
            wrong: rotor_testkit::canary(),
        };
        let file = |name: &str, token: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{token}\n")).unwrap();
            path.display().to_string()
        };
        let yaml = format!(
            r#"
identities:
  - name: team-payments
    tokenFrom: {{file: {payments}}}
    selector: {{team: payments}}
    rateLimit: {{requests: 20, per: 1m}}
  - name: orders
    tokenFrom: {{file: {orders}}}
    policies: [orders-db]
    compromise: true
  - name: burst
    tokenFrom: {{file: {burst}}}
    policies: [shared-mq]
    rateLimit: {{requests: 3, per: 1h}}
  - name: ci
    kubernetes: {{serviceAccount: ci/deployer}}
    policies: ["*"]
    compromise: true
"#,
            payments = file("payments", &tokens.payments),
            orders = file("orders", &tokens.orders),
            burst = file("burst", &tokens.burst),
        );
        let config_path = dir.path().join("auth.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let config = AuthConfig::load(&config_path).unwrap();

        let reviewer = Arc::new(FakeReviewer {
            users: HashMap::from([
                (
                    tokens.ci_sa.clone(),
                    "system:serviceaccount:ci:deployer".to_owned(),
                ),
                (
                    tokens.stranger_sa.clone(),
                    "system:serviceaccount:default:stranger".to_owned(),
                ),
            ]),
            ..FakeReviewer::default()
        });
        let auth = Authenticator::from_config(&config, None)
            .await
            .unwrap()
            .with_token_reviewer(reviewer.clone());

        let control = Arc::new(FakeControl::default());
        let audits = Arc::new(Mutex::new(Vec::new()));
        let fail_audit = Arc::new(AtomicBool::new(false));
        let sink: AuditFn = {
            let audits = audits.clone();
            let fail = fail_audit.clone();
            Arc::new(move |record: RequestAudit| {
                if fail.load(Ordering::SeqCst) {
                    return Err("disk full".to_owned());
                }
                audits.lock().unwrap().push(record);
                Ok(())
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            control.clone(),
            Arc::new(auth),
            Arc::new(|| "# HELP rotor_up Up.\n# TYPE rotor_up gauge\nrotor_up 1\n".to_owned()),
            Some(sink),
            async move {
                let _ = stopped.await;
            },
        ));
        Harness {
            base: Url::parse(&format!("http://{addr}")).unwrap(),
            http: reqwest::Client::new(),
            control,
            reviewer,
            audits,
            fail_audit,
            tokens,
            transcript: Mutex::new(String::new()),
            _dir: dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let url = self.base.join(path).unwrap();
        let mut request = match method {
            "POST" => self.http.post(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        {
            let mut t = self.transcript.lock().unwrap();
            t.push_str(&format!(
                "{method} {path} -> {status} {headers:?}\n{text}\n"
            ));
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send("GET", path, token, None).await
    }

    async fn rotate(&self, policy: &str, token: Option<&str>, body: Value) -> Answer {
        self.send(
            "POST",
            &format!("/v1/policies/{policy}/rotate"),
            token,
            Some(body),
        )
        .await
    }

    async fn release(&self, policy: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        self.send(
            "POST",
            &format!("/v1/policies/{policy}/release"),
            token,
            body,
        )
        .await
    }

    fn audits(&self) -> Vec<RequestAudit> {
        self.audits.lock().unwrap().clone()
    }

    /// Runs `f` and returns the audit records it produced.
    async fn audited<F: std::future::Future<Output = Answer>>(
        &self,
        f: F,
    ) -> (Answer, Vec<RequestAudit>) {
        let before = self.audits().len();
        let answer = f.await;
        // The record of a request is written before its answer is sent.
        let records = self.audits()[before..].to_vec();
        (answer, records)
    }

    /// No token appears in any answer or audit record (serialized or `Debug`).
    fn assert_no_token_leaked(&self) {
        let mut haystack = self.transcript.lock().unwrap().clone();
        for record in self.audits() {
            haystack.push_str(&serde_json::to_string(&record).unwrap());
            haystack.push_str(&format!("{record:?}"));
        }
        assert!(!haystack.is_empty());
        rotor_testkit::assert_no_secret(&haystack, &self.tokens.all());
    }

    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), self.server.take().unwrap())
            .await
            .expect("the server stops within 10 s of the shutdown signal")
            .unwrap();
        result.expect("serve returns Ok after a shutdown");
    }
}

fn one(records: &[RequestAudit]) -> &RequestAudit {
    assert_eq!(
        records.len(),
        1,
        "expected one audit record, got {records:#?}"
    );
    &records[0]
}

fn error_text(answer: &Answer) -> &str {
    answer.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error in {:?}", answer.body))
}

// ---------------------------------------------------------------------------------------
// Tests

/// The acceptance matrix: no token / wrong token / other team's policy / compromise
/// without permission / missing reason / burst over the limit → 401/401/403/403/400/429,
/// each audited once with who, what and why; the agent is never asked.
#[tokio::test]
async fn refused_requests_get_their_status_and_one_audit_record_each() {
    let h = Harness::start().await;
    let t = &h.tokens;
    let reason = json!({"reason": "suspected leak", "ticket": "INC-1"});

    // No token.
    let (a, records) = h
        .audited(h.rotate("payments-db", None, reason.clone()))
        .await;
    assert_eq!(a.status, 401);
    assert!(
        a.headers[reqwest::header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert!(error_text(&a).contains("missing bearer token"));
    let r = one(&records);
    assert_eq!(
        (r.identity.as_deref(), r.outcome, r.status),
        (None, Outcome::Unauthenticated, 401)
    );
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/policies/payments-db/rotate")
    );
    assert_eq!(r.policy.as_deref(), Some("payments-db"));
    assert!(r.remote.ip().is_loopback());

    // Wrong token (also not a ServiceAccount token).
    let (a, records) = h
        .audited(h.rotate("payments-db", Some(&t.wrong), reason.clone()))
        .await;
    assert_eq!(a.status, 401);
    assert!(a.headers.contains_key(reqwest::header::WWW_AUTHENTICATE));
    assert_eq!(error_text(&a), "invalid bearer token");
    let r = one(&records);
    assert_eq!(
        (r.identity.as_deref(), r.outcome, r.status),
        (None, Outcome::Unauthenticated, 401)
    );
    assert!(
        r.detail.contains("Kubernetes did not authenticate it"),
        "{}",
        r.detail
    );

    // Another team's policy.
    let (a, records) = h
        .audited(h.rotate("orders-db", Some(&t.payments), reason.clone()))
        .await;
    assert_eq!(a.status, 403);
    assert!(error_text(&a).contains("not granted policy orders-db"));
    let r = one(&records);
    assert_eq!(
        (r.identity.as_deref(), r.outcome, r.status),
        (Some("team-payments"), Outcome::Forbidden, 403)
    );
    assert_eq!(r.auth, Some("token"));

    // Compromise without permission (on a policy the identity may rotate).
    let (a, records) = h
        .audited(h.rotate(
            "payments-db",
            Some(&t.payments),
            json!({"reason": "leak", "compromise": true}),
        ))
        .await;
    assert_eq!(a.status, 403);
    assert!(error_text(&a).contains("may not request compromise"));
    let r = one(&records);
    assert_eq!(
        (r.identity.as_deref(), r.outcome, r.status),
        (Some("team-payments"), Outcome::Forbidden, 403)
    );
    assert_eq!(r.trigger, Some(Trigger::Compromise));

    // Missing reason (payments-db requires one; blank counts as missing).
    let (a, records) = h
        .audited(h.rotate("payments-db", Some(&t.payments), json!({"reason": "  "})))
        .await;
    assert_eq!(a.status, 400);
    assert!(error_text(&a).contains("requires a reason"));
    let r = one(&records);
    assert_eq!(
        (r.identity.as_deref(), r.outcome, r.status),
        (Some("team-payments"), Outcome::Invalid, 400)
    );
    // Missing ticket where the policy requires one.
    let (a, _) = h
        .audited(h.rotate("orders-db", Some(&t.orders), json!({"reason": "r"})))
        .await;
    assert_eq!(a.status, 400);
    assert!(error_text(&a).contains("requires a ticket"));

    // Burst over the limit: `burst` may make 3 requests per hour.
    for _ in 0..3 {
        let a = h.get("/v1/policies", Some(&t.burst)).await;
        assert_eq!(a.status, 200);
    }
    let (a, records) = h
        .audited(h.rotate("shared-mq", Some(&t.burst), json!({})))
        .await;
    assert_eq!(a.status, 429);
    let retry: u64 = a.headers[reqwest::header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1200).contains(&retry), "Retry-After {retry}");
    assert!(error_text(&a).contains("rate limit"));
    let r = one(&records);
    assert_eq!(
        (r.identity.as_deref(), r.outcome, r.status),
        (Some("burst"), Outcome::RateLimited, 429)
    );
    // Other identities have their own budget.
    assert_eq!(h.get("/v1/policies", Some(&t.payments)).await.status, 200);

    assert!(
        h.control.calls().is_empty(),
        "the agent was asked to rotate"
    );
    h.assert_no_token_leaked();
    h.shutdown().await;
}

/// A permitted request reaches the agent with the caller as actor and the right
/// trigger, answers 202 with the agent's `Accepted`, and is audited before and after.
#[tokio::test]
async fn a_permitted_request_rotates_as_the_caller() {
    let h = Harness::start().await;
    let t = &h.tokens;

    let (a, records) = h
        .audited(h.rotate(
            "payments-cache",
            Some(&t.payments),
            json!({"reason": "  quarterly drill ", "ticket": "CHG-7"}),
        ))
        .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(a.body["state"], "queued");
    let id = a.body["rotation_id"].as_str().unwrap().to_owned();

    let calls = h.control.calls();
    let [(policy, request)] = &calls[..] else {
        panic!("expected one rotate call, got {}", calls.len())
    };
    assert_eq!(policy, "payments-cache");
    assert_eq!(request.asker.actor, "api:team-payments");
    assert_eq!(request.trigger, Trigger::OnDemand);
    assert_eq!(request.reason.as_deref(), Some("quarterly drill"));
    assert_eq!(request.ticket.as_deref(), Some("CHG-7"));

    let [before, after] = &records[..] else {
        panic!("expected two audit records, got {records:#?}")
    };
    assert_eq!(
        (before.identity.as_deref(), before.outcome, before.status),
        (Some("team-payments"), Outcome::Authorized, 202)
    );
    assert_eq!(before.rotation_id, None);
    assert_eq!(
        (after.identity.as_deref(), after.outcome, after.status),
        (Some("team-payments"), Outcome::Allowed, 202)
    );
    assert_eq!(after.rotation_id.as_deref(), Some(id.as_str()));
    assert_eq!(after.reason.as_deref(), Some("quarterly drill"));
    assert_eq!(after.ticket.as_deref(), Some("CHG-7"));
    assert_eq!(after.trigger, Some(Trigger::OnDemand));

    // A compromise by an identity allowed to use it; a policy without requirements
    // needs no body at all.
    let a = h
        .rotate(
            "orders-db",
            Some(&t.orders),
            json!({"reason": "key on pastebin", "ticket": "INC-9", "compromise": true}),
        )
        .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let a = h
        .send(
            "POST",
            "/v1/policies/shared-mq/rotate",
            Some(&t.burst),
            None,
        )
        .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    let calls = h.control.calls();
    assert_eq!(calls[1].0, "orders-db");
    assert_eq!(calls[1].1.trigger, Trigger::Compromise);
    assert_eq!(calls[1].1.asker.actor, "api:orders");
    assert_eq!(calls[2].1.trigger, Trigger::OnDemand);
    assert_eq!(calls[2].1.reason, None);

    h.assert_no_token_leaked();
    h.shutdown().await;
}

/// Fail closed: if the audit record cannot be written, the answer is 503 and the agent
/// is not asked; reads are not served unaudited either.
#[tokio::test]
async fn an_audit_failure_stops_the_rotation() {
    let h = Harness::start().await;
    let t = &h.tokens;
    h.fail_audit.store(true, Ordering::SeqCst);

    let a = h
        .rotate("payments-db", Some(&t.payments), json!({"reason": "drill"}))
        .await;
    assert_eq!(a.status, 503);
    assert!(error_text(&a).contains("audit log cannot be written"));
    assert!(
        h.control.calls().is_empty(),
        "rotated without an audit record"
    );

    let a = h.get("/v1/policies", Some(&t.payments)).await;
    assert_eq!(a.status, 503);
    assert!(a.body.get("error").is_some());

    // Refusals keep their own status.
    assert_eq!(h.get("/v1/policies", None).await.status, 401);

    h.fail_audit.store(false, Ordering::SeqCst);
    let a = h
        .rotate("payments-db", Some(&t.payments), json!({"reason": "drill"}))
        .await;
    assert_eq!(a.status, 202);
    assert_eq!(h.control.calls().len(), 1);
    h.assert_no_token_leaked();
    h.shutdown().await;
}

/// Identities see only what they are granted, by name or by label selector; other
/// policies and their rotations are refused.
#[tokio::test]
async fn policies_and_rotations_are_filtered_by_grants() {
    let h = Harness::start().await;
    let t = &h.tokens;
    let names = |a: &Answer| -> Vec<String> {
        let mut n: Vec<String> = a
            .body
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {:?}", a.body))
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };

    // Selector {team: payments}.
    let a = h.get("/v1/policies", Some(&t.payments)).await;
    assert_eq!(a.status, 200);
    assert_eq!(names(&a), ["payments-cache", "payments-db"]);
    assert_eq!(a.body[0]["last_rotation"]["status"], "completed");
    // By name.
    assert_eq!(
        names(&h.get("/v1/policies", Some(&t.orders)).await),
        ["orders-db"]
    );
    // "*" through a Kubernetes ServiceAccount.
    assert_eq!(names(&h.get("/v1/policies", Some(&t.ci_sa)).await).len(), 4);

    let a = h.get("/v1/policies/payments-db", Some(&t.payments)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["labels"]["team"], "payments");
    let (a, records) = h
        .audited(h.get("/v1/policies/orders-db", Some(&t.payments)))
        .await;
    assert_eq!(a.status, 403);
    assert_eq!(one(&records).outcome, Outcome::Forbidden);
    // A name that does not exist gets the answer of a policy not granted, so names
    // cannot be probed (issue 14); only the audit record tells them apart.
    let (a, records) = h
        .audited(h.get("/v1/policies/nope", Some(&t.payments)))
        .await;
    assert_eq!(a.status, 403);
    assert_eq!(
        error_text(&a),
        "identity team-payments is not granted policy nope"
    );
    let r = one(&records);
    assert_eq!(r.outcome, Outcome::Forbidden);
    assert!(r.detail.contains("no policy of that name"), "{}", r.detail);
    let a = h
        .rotate("nope", Some(&t.payments), json!({"reason": "x"}))
        .await;
    assert_eq!(a.status, 403);
    // An identity granted every name learns that it does not exist.
    let (a, records) = h.audited(h.get("/v1/policies/nope", Some(&t.ci_sa))).await;
    assert_eq!(a.status, 404);
    assert_eq!(one(&records).outcome, Outcome::NotFound);

    // Rotations: visible to identities granted their policy only.
    let a = h
        .rotate("payments-db", Some(&t.payments), json!({"reason": "drill"}))
        .await;
    let id = a.body["rotation_id"].as_str().unwrap().to_owned();
    let a = h
        .get(&format!("/v1/rotations/{id}"), Some(&t.payments))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["actor"], "api:team-payments");
    assert_eq!(a.body["trigger"], "on_demand");
    let (a, records) = h
        .audited(h.get(&format!("/v1/rotations/{id}"), Some(&t.orders)))
        .await;
    assert_eq!(a.status, 403);
    assert!(
        !error_text(&a).contains("payments-db"),
        "names the hidden policy"
    );
    assert_eq!(one(&records).policy.as_deref(), Some("payments-db"));
    assert_eq!(
        h.get("/v1/rotations/01JNOTHERE", Some(&t.orders))
            .await
            .status,
        404
    );

    // Unknown endpoints and methods under /v1 are authenticated and audited too.
    let (a, records) = h.audited(h.get("/v1/nothing", None)).await;
    assert_eq!(a.status, 401);
    assert_eq!(one(&records).outcome, Outcome::Unauthenticated);
    let (a, records) = h
        .audited(h.send(
            "DELETE",
            "/v1/policies/payments-db",
            Some(&t.payments),
            None,
        ))
        .await;
    assert_eq!(a.status, 405);
    assert_eq!(one(&records).identity.as_deref(), Some("team-payments"));

    // Malformed and oversized bodies are refused before anything else.
    let a = h
        .rotate("payments-db", Some(&t.payments), json!({"reasn": "typo"}))
        .await;
    assert_eq!(a.status, 400);
    assert!(error_text(&a).contains("reasn"));
    let a = h
        .rotate(
            "payments-db",
            Some(&t.payments),
            json!({"reason": "x".repeat(2000)}),
        )
        .await;
    assert_eq!(a.status, 400);

    assert_eq!(h.control.calls().len(), 1);
    h.assert_no_token_leaked();
    h.shutdown().await;
}

/// Health, readiness and metrics need no token and are not audited.
#[tokio::test]
async fn health_readiness_and_metrics() {
    let h = Harness::start().await;
    let a = h.get("/healthz", None).await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("ok")));

    let a = h.get("/readyz", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        (a.body["ready"].as_bool(), a.body["leader"].as_bool()),
        (Some(true), Some(true))
    );
    h.control.not_ready.store(true, Ordering::SeqCst);
    let a = h.get("/readyz", None).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.body["ready"], false);
    assert_eq!(a.body["reason"], "policies not loaded yet");
    assert_eq!(
        h.get("/healthz", None).await.status,
        200,
        "alive while not ready"
    );

    let a = h.get("/metrics", None).await;
    assert_eq!(a.status, 200);
    let content_type = a.headers[reqwest::header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(a.body.as_str().unwrap().contains("rotor_up 1"));

    assert_eq!(h.get("/nothing", None).await.status, 404);
    assert!(h.audits().is_empty(), "{:#?}", h.audits());
    h.shutdown().await;
}

/// The agent's refusals become 409 / 503 / 500, audited with the failure; an internal
/// error's text stays in the audit record and out of the answer.
#[tokio::test]
async fn agent_errors_map_to_http_statuses() {
    let h = Harness::start().await;
    let t = &h.tokens;
    let cases = [
        (
            ControlError::Busy("rotation 01JX of payments-db is open".into()),
            409,
        ),
        (ControlError::NotLeader, 503),
        (ControlError::Audit("disk full".into()), 503),
        (ControlError::Internal("journal corrupt at /x".into()), 500),
    ];
    for (error, status) in cases {
        *h.control.next_error.lock().unwrap() = Some(error);
        let (a, records) = h
            .audited(h.rotate("payments-db", Some(&t.payments), json!({"reason": "r"})))
            .await;
        assert_eq!(a.status, status, "{:?}", a.body);
        let [authorized, failed] = &records[..] else {
            panic!("expected two records, got {records:#?}")
        };
        assert_eq!(authorized.outcome, Outcome::Authorized);
        assert_eq!((failed.outcome, failed.status), (Outcome::Failed, status));
        if status == 500 {
            assert_eq!(error_text(&a), "internal error; see the agent's log");
            assert!(failed.detail.contains("journal corrupt"));
        } else {
            assert_eq!(error_text(&a), failed.detail);
        }
    }
    h.assert_no_token_leaked();
    h.shutdown().await;
}

/// In-cluster callers: a ServiceAccount token that TokenReview accepts maps to the
/// identity naming that account; unknown accounts and failed reviews are refused.
#[tokio::test]
async fn kubernetes_service_account_tokens_map_to_identities() {
    let h = Harness::start().await;
    let t = &h.tokens;

    let (a, records) = h
        .audited(h.rotate(
            "payments-db",
            Some(&t.ci_sa),
            json!({"reason": "deploy pipeline", "compromise": true}),
        ))
        .await;
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(records[0].identity.as_deref(), Some("ci"));
    assert_eq!(records[0].auth, Some("kubernetes"));
    let calls = h.control.calls();
    assert_eq!(calls[0].1.asker.actor, "api:ci");
    assert_eq!(calls[0].1.trigger, Trigger::Compromise);
    let reviews = h.reviewer.calls.load(Ordering::SeqCst);
    assert_eq!(reviews, 1);

    // The review is reused for the same token for a while.
    assert_eq!(h.get("/v1/policies", Some(&t.ci_sa)).await.status, 200);
    assert_eq!(h.reviewer.calls.load(Ordering::SeqCst), reviews);
    // Static tokens never reach the reviewer.
    assert_eq!(h.get("/v1/policies", Some(&t.orders)).await.status, 200);
    assert_eq!(h.reviewer.calls.load(Ordering::SeqCst), reviews);

    // Authenticated by Kubernetes, unknown to rotor.
    let (a, records) = h.audited(h.get("/v1/policies", Some(&t.stranger_sa))).await;
    assert_eq!(a.status, 401);
    let r = one(&records);
    assert_eq!(r.identity, None);
    assert!(
        r.detail
            .contains("ServiceAccount default/stranger is not a configured identity"),
        "{}",
        r.detail
    );

    // The review itself fails: not an authentication, and the caller may retry.
    h.reviewer.fail.store(true, Ordering::SeqCst);
    let (a, records) = h.audited(h.get("/v1/policies", Some(&t.wrong))).await;
    assert_eq!(a.status, 503);
    let r = one(&records);
    assert_eq!((r.outcome, r.identity.as_deref()), (Outcome::Failed, None));
    assert!(r.detail.contains("etcd unavailable"));

    h.assert_no_token_leaked();
    h.shutdown().await;
}

/// `KubeTokenReviewer` speaks `authentication.k8s.io/v1` TokenReview: checked against a
/// loopback endpoint that answers like a real API server (authenticated user, or an
/// `error` without `authenticated` for a bad token).
#[tokio::test]
async fn kube_token_reviewer_speaks_the_tokenreview_api() {
    use axum::routing::post;
    rotor::install_crypto_provider();
    let good = rotor_testkit::canary();
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let app =
        {
            let good = good.clone();
            let seen = seen.clone();
            axum::Router::new().route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(move |axum::Json(review): axum::Json<Value>| {
                let good = good.clone();
                let seen = seen.clone();
                async move {
                    let token = review["spec"]["token"].as_str().unwrap_or_default().to_owned();
                    seen.lock().unwrap().push(review.clone());
                    let status = if token == good {
                        json!({"authenticated": true, "user": {
                            "username": "system:serviceaccount:ci:deployer",
                            "uid": "1d8f", "groups": ["system:serviceaccounts"]}})
                    } else {
                        json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"})
                    };
                    let mut answer = review;
                    answer["metadata"] = json!({"creationTimestamp": null});
                    answer["status"] = status;
                    (axum::http::StatusCode::CREATED, axum::Json(answer))
                }
            }),
        )
        };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let reviewer = KubeTokenReviewer::new(client, vec!["rotor".into()]);
    let user = reviewer
        .review(&SecretString::from(good.clone()))
        .await
        .unwrap();
    assert_eq!(user.as_deref(), Some("system:serviceaccount:ci:deployer"));
    let user = reviewer
        .review(&SecretString::from(rotor_testkit::canary()))
        .await
        .unwrap();
    assert_eq!(user, None);

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0]["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(seen[0]["kind"], "TokenReview");
    assert_eq!(seen[0]["spec"]["audiences"], json!(["rotor"]));
}

/// kube-fake-client does not implement TokenReview (it refuses the create with 422), so
/// against it — as against any API server that cannot review — the API fails closed: the
/// caller gets 503, never access.
#[tokio::test]
async fn fake_kube_cannot_review_tokens_so_the_api_fails_closed() {
    rotor::install_crypto_provider();
    let kube = rotor_testkit::FakeKube::start().await;
    let config = AuthConfig::parse(
        std::path::Path::new("inline.yaml"),
        "identities:\n  - name: ci\n    kubernetes: {serviceAccount: ci/deployer}\n    policies: ['*']\n",
    )
    .unwrap();
    let auth = Authenticator::from_config(&config, None)
        .await
        .unwrap()
        .with_kube(common::rotor_kube_client(&kube).await);
    let token = rotor_testkit::canary();
    let err = auth.authenticate(&token).await.unwrap_err();
    assert_eq!(err.kind(), "token_review");
    assert!(err.to_string().contains("HTTP 422"), "{err}");
    rotor_testkit::assert_no_secret(&format!("{err} {err:?}"), &[&token]);
}

/// The CLI's client of the agent at `base`, calling with `token`.
fn client(base: &Url, token: &SecretString) -> AgentClient {
    AgentClient::new(base.clone(), token.clone())
}

/// The body the CLI sends for `rotor rotate --server`.
fn rotate_body(reason: Option<&str>, ticket: Option<&str>, compromise: bool) -> RotateBody {
    RotateBody {
        reason: reason.map(str::to_owned),
        ticket: ticket.map(str::to_owned),
        compromise: Some(compromise),
    }
}

/// The CLI's client functions against the server: rotate, list, one policy, one
/// rotation, and the server's refusals as typed errors.
#[tokio::test]
async fn client_functions_round_trip() {
    let h = Harness::start().await;
    let t = &h.tokens;
    let payments = SecretString::from(t.payments.clone());

    let accepted = client(&h.base, &payments)
        .rotate(
            "payments-db",
            &rotate_body(Some("drill"), Some("CHG-1"), false),
        )
        .await
        .unwrap();
    assert_eq!(accepted.state, "queued");
    let id = accepted.rotation_id.unwrap();
    let (_, request) = &h.control.calls()[0];
    assert_eq!(
        (
            request.asker.actor.as_str(),
            request.reason.as_deref(),
            request.ticket.as_deref()
        ),
        ("api:team-payments", Some("drill"), Some("CHG-1"))
    );

    let rotation = client(&h.base, &payments).rotation(&id).await.unwrap();
    assert_eq!(rotation.rotation_id, id);
    assert_eq!(rotation.policy, "payments-db");
    assert_eq!(rotation.trigger, Trigger::OnDemand);

    let list = client(&h.base, &payments).policies().await.unwrap();
    assert_eq!(list.len(), 2);
    let one = client(&h.base, &payments)
        .policy("payments-cache")
        .await
        .unwrap();
    assert_eq!(one.labels["tier"], "cache");

    // A base URL with a trailing slash works the same.
    let slash = Url::parse(&format!("{}/", h.base.as_str().trim_end_matches('/'))).unwrap();
    assert_eq!(client(&slash, &payments).policies().await.unwrap().len(), 2);

    let err = client(&h.base, &payments)
        .rotate("payments-db", &rotate_body(Some("x"), None, true))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(
        err.to_string().contains("may not request compromise"),
        "{err}"
    );
    assert!(!err.is_transient());

    let wrong = SecretString::from(t.wrong.clone());
    let err = client(&h.base, &wrong).policies().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    rotor_testkit::assert_no_secret(&format!("{err} {err:?}"), &t.all());

    let burst = SecretString::from(t.burst.clone());
    for _ in 0..3 {
        client(&h.base, &burst).policies().await.unwrap();
    }
    match client(&h.base, &burst)
        .rotate("shared-mq", &rotate_body(None, None, false))
        .await
    {
        Err(RemoteError::Status {
            status: 429,
            retry_after: Some(secs),
            ..
        }) => assert!(secs >= 1),
        other => panic!("expected 429 with Retry-After, got {other:?}"),
    }

    let err = client(&h.base, &payments)
        .rotation("01JNOTHERE")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));

    h.assert_no_token_leaked();
    let base = h.base.clone();
    h.shutdown().await;
    let err = client(&base, &payments).policies().await.unwrap_err();
    assert_eq!(err.kind(), "remote_transport");
    assert!(err.is_transient());
}

/// Building the authenticator: tokens from a file and from Vault (OpenBao), and the
/// errors for a short, shared or missing token — none of which print the token.
#[tokio::test]
async fn tokens_resolve_from_files_and_vault_with_clear_errors() {
    rotor::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let file_token = rotor_testkit::canary();
    let vault_token = rotor_testkit::canary();
    let token_file = dir.path().join("t");
    std::fs::write(&token_file, &file_token).unwrap();

    let s = rotor_testkit::stack();
    let vault = rotor::vault::Vault::connect(&rotor::vault::VaultConfig {
        addr: s.vault_addr.clone(),
        token: Some(SecretString::from(s.vault_token.clone())),
        ..rotor::vault::VaultConfig::from_env()
    })
    .unwrap();
    let path = format!("rotor-test/{}", rotor_testkit::unique("api-token"));
    let mut data = SecretMap::new();
    data.insert("ops", SecretString::from(vault_token.clone()));
    vault.kv_write("secret", &path, &data, None).await.unwrap();

    let parse = |yaml: String| AuthConfig::parse(std::path::Path::new("a.yaml"), &yaml).unwrap();
    let file = token_file.display();
    let config = parse(format!(
        "identities:\n  - name: a\n    tokenFrom: {{file: {file}}}\n    policies: [x]\n  - name: b\n    tokenFrom: {{vault: {{path: {path}, key: ops}}}}\n    policies: [y]\n"
    ));
    let auth = Authenticator::from_config(&config, Some(&vault))
        .await
        .unwrap();
    let who = |t: &str| {
        let auth = &auth;
        let t = t.to_owned();
        async move {
            match auth.authenticate(&t).await.unwrap() {
                rotor::server::Authentication::Known { identity, .. } => {
                    Some(identity.name.clone())
                }
                rotor::server::Authentication::Unknown { .. } => None,
            }
        }
    };
    assert_eq!(who(&file_token).await.as_deref(), Some("a"));
    assert_eq!(who(&vault_token).await.as_deref(), Some("b"));
    assert_eq!(who(&rotor_testkit::canary()).await, None);
    assert!(format!("{auth:?}").contains("static_tokens: 2"));

    let mut errors = Vec::new();
    // Without a Vault client.
    let e = Authenticator::from_config(&config, None).await.unwrap_err();
    assert_eq!(e.kind(), "auth_no_vault");
    errors.push(e);
    // The same token twice.
    let e = Authenticator::from_config(
        &parse(format!(
            "identities:\n  - name: a\n    tokenFrom: {{file: {file}}}\n    policies: [x]\n  - name: b\n    tokenFrom: {{file: {file}}}\n    policies: [x]\n"
        )),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "identities a and b have the same token; give each its own"
    );
    errors.push(e);
    // Too short.
    let short = dir.path().join("short");
    std::fs::write(&short, "hunter2\n").unwrap();
    let e = Authenticator::from_config(
        &parse(format!(
            "identities:\n  - name: a\n    tokenFrom: {{file: {}}}\n    policies: [x]\n",
            short.display()
        )),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("7 characters long; use at least 16"),
        "{e}"
    );
    // Missing file and missing Vault key.
    let e = Authenticator::from_config(
        &parse("identities:\n  - name: a\n    tokenFrom: {file: /nonexistent/rotor-token}\n    policies: [x]\n".into()),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        rotor::error_chain(&e).contains("file:/nonexistent/rotor-token"),
        "{e}"
    );
    errors.push(e);
    let e = Authenticator::from_config(
        &parse(format!(
            "identities:\n  - name: a\n    tokenFrom: {{vault: {{path: {path}, key: nope}}}}\n    policies: [x]\n"
        )),
        Some(&vault),
    )
    .await
    .unwrap_err();
    assert!(
        rotor::error_chain(&e).contains("has no key \"nope\""),
        "{}",
        rotor::error_chain(&e)
    );
    errors.push(e);

    let text: String = errors
        .iter()
        .map(|e| format!("{} {e:?}\n", rotor::error_chain(e)))
        .collect();
    rotor_testkit::assert_no_secret(&text, &[&file_token, &vault_token]);
    vault.kv_destroy_all("secret", &path).await.unwrap();
}

/// Lifting a quarantine: refused without a token (401), for another team's policy (403),
/// without a reason or with a bad body (400) and for an unknown policy (404), each with
/// one audit record and without asking the agent; a permitted release reaches the agent
/// as the caller with the reason (200), and the agent's Busy ("not quarantined") is 409.
#[tokio::test]
async fn release_lifts_a_quarantine_as_the_caller() {
    let h = Harness::start().await;
    let t = &h.tokens;
    h.control.quarantine("payments-db");
    let why = json!({"reason": "root cause fixed"});

    // (policy, token, body, status, outcome, error text)
    let pay = Some(t.payments.as_str());
    let refusals = [
        (
            "payments-db",
            None,
            Some(why.clone()),
            401,
            Outcome::Unauthenticated,
            "missing bearer token",
        ),
        (
            "orders-db",
            pay,
            Some(why.clone()),
            403,
            Outcome::Forbidden,
            "not granted policy orders-db",
        ),
        (
            "payments-db",
            pay,
            None,
            400,
            Outcome::Invalid,
            "requires a reason",
        ),
        (
            "payments-db",
            pay,
            Some(json!({})),
            400,
            Outcome::Invalid,
            "requires a reason",
        ),
        (
            "payments-db",
            pay,
            Some(json!({"reason": "  "})),
            400,
            Outcome::Invalid,
            "requires a reason",
        ),
        (
            "payments-db",
            pay,
            Some(json!({"reason": "x", "force": true})),
            400,
            Outcome::Invalid,
            "must be JSON",
        ),
        // Not told apart from a policy it is not granted (issue 14).
        (
            "nope",
            pay,
            Some(why.clone()),
            403,
            Outcome::Forbidden,
            "not granted policy nope",
        ),
    ];
    for (policy, token, body, status, outcome, text) in refusals {
        let (a, records) = h.audited(h.release(policy, token, body.clone())).await;
        assert_eq!(a.status, status, "{policy} {body:?}: {:?}", a.body);
        assert!(error_text(&a).contains(text), "{:?}", a.body);
        let r = one(&records);
        assert_eq!((r.outcome, r.status), (outcome, status));
        assert_eq!(r.path, format!("/v1/policies/{policy}/release"));
    }
    assert!(h.control.releases().is_empty(), "the agent was asked");

    // Permitted: the reason is trimmed and recorded; the caller is the actor.
    let (a, records) = h
        .audited(h.release(
            "payments-db",
            Some(&t.payments),
            Some(json!({"reason": " root cause fixed "})),
        ))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body, json!({"state": "released"}));
    assert_eq!(
        h.control.releases(),
        [(
            "payments-db".to_owned(),
            "api:team-payments".to_owned(),
            "root cause fixed".to_owned()
        )]
    );
    let [before, after] = &records[..] else {
        panic!("expected two audit records, got {records:#?}")
    };
    assert_eq!(
        (before.identity.as_deref(), before.outcome, before.status),
        (Some("team-payments"), Outcome::Authorized, 200)
    );
    assert_eq!(
        (after.identity.as_deref(), after.outcome, after.status),
        (Some("team-payments"), Outcome::Allowed, 200)
    );
    assert_eq!(after.reason.as_deref(), Some("root cause fixed"));
    assert_eq!(after.policy.as_deref(), Some("payments-db"));

    // Not quarantined (any more): the agent's Busy is 409.
    let (a, records) = h
        .audited(h.release("payments-db", Some(&t.payments), Some(why.clone())))
        .await;
    assert_eq!(a.status, 409, "{:?}", a.body);
    assert!(error_text(&a).contains("not quarantined"));
    let [authorized, failed] = &records[..] else {
        panic!("expected two audit records, got {records:#?}")
    };
    assert_eq!(authorized.outcome, Outcome::Authorized);
    assert_eq!((failed.outcome, failed.status), (Outcome::Failed, 409));
    assert_eq!(h.control.releases().len(), 2);

    // Fail closed: no audit record, no release.
    h.control.quarantine("payments-cache");
    h.fail_audit.store(true, Ordering::SeqCst);
    let a = h
        .release("payments-cache", Some(&t.payments), Some(why.clone()))
        .await;
    assert_eq!(a.status, 503);
    assert!(error_text(&a).contains("audit log cannot be written"));
    assert_eq!(
        h.control.releases().len(),
        2,
        "released without an audit record"
    );

    assert!(h.control.calls().is_empty(), "a release rotated");
    h.assert_no_token_leaked();
    h.shutdown().await;
}

/// `AgentClient::release` (what `rotor release --server` calls): success, the agent's 409 and
/// a missing reason as typed errors.
#[tokio::test]
async fn remote_release_round_trips() {
    let h = Harness::start().await;
    let t = &h.tokens;
    let orders = SecretString::from(t.orders.clone());
    h.control.quarantine("orders-db");

    client(&h.base, &orders)
        .release("orders-db", "rotated by hand")
        .await
        .unwrap();
    assert_eq!(
        h.control.releases(),
        [(
            "orders-db".to_owned(),
            "api:orders".to_owned(),
            "rotated by hand".to_owned()
        )]
    );

    let err = client(&h.base, &orders)
        .release("orders-db", "again")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(err.to_string().contains("not quarantined"), "{err}");
    assert!(!err.is_transient());

    let err = client(&h.base, &orders)
        .release("orders-db", "")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    let err = client(&h.base, &orders)
        .release("payments-db", "x")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    rotor_testkit::assert_no_secret(&format!("{err} {err:?}"), &t.all());
    assert_eq!(h.control.releases().len(), 2);

    h.assert_no_token_leaked();
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// POST /v1/rotations: every policy whose labels match a selector

#[tokio::test]
async fn a_selector_request_rotates_every_matching_policy_or_none() {
    let h = Harness::start().await;
    let payments = h.tokens.payments.clone();
    let bulk = |token: String, body: Value| {
        let h = &h;
        async move {
            h.send("POST", "/v1/rotations", Some(&token), Some(body))
                .await
        }
    };

    // Every matching policy is granted and complete: each is queued as the caller,
    // with one `authorized` record for the request and one record per policy.
    let (answer, records) = h
        .audited(bulk(
            payments.clone(),
            json!({"selector": {"team": "payments"}, "reason": "quarterly", "ticket": "CHG-1"}),
        ))
        .await;
    assert_eq!(answer.status, 202, "{:#}", answer.body);
    assert_eq!(answer.body["accepted"], 2);
    assert_eq!(answer.body["refused"], 0);
    let named: Vec<&str> = answer.body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(named, ["payments-cache", "payments-db"]);
    let calls = h.control.calls();
    assert_eq!(calls.len(), 2);
    for (policy, request) in &calls {
        assert!(policy.starts_with("payments-"));
        assert_eq!(request.asker.actor, "api:team-payments");
        assert_eq!(request.trigger, Trigger::OnDemand);
        assert_eq!(request.reason.as_deref(), Some("quarterly"));
        assert_eq!(request.ticket.as_deref(), Some("CHG-1"));
    }
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(records[0].outcome, Outcome::Authorized);
    assert!(
        records[0].detail.contains("2 policies"),
        "{}",
        records[0].detail
    );
    for record in &records[1..] {
        assert_eq!(record.outcome, Outcome::Allowed);
        assert!(record.rotation_id.is_some());
        assert!(record.policy.as_deref().unwrap().starts_with("payments-"));
    }

    // One matching policy not granted: 403, nothing queued; only the audit record
    // names the policy the caller is not granted (issue 14).
    let (answer, records) = h
        .audited(bulk(
            payments.clone(),
            json!({"selector": {"tier": "db"}, "reason": "r", "ticket": "T-1"}),
        ))
        .await;
    assert_eq!(answer.status, 403, "{:#}", answer.body);
    assert!(
        !error_text(&answer).contains("orders-db"),
        "{}",
        error_text(&answer)
    );
    assert!(error_text(&answer).contains("nothing was rotated"));
    assert_eq!(one(&records).outcome, Outcome::Forbidden);
    assert!(one(&records).detail.contains("orders-db"));
    // Only policies it is not granted: the answer for no match at all.
    let (answer, records) = h
        .audited(bulk(
            payments.clone(),
            json!({"selector": {"team": "orders"}, "reason": "r", "ticket": "T-1"}),
        ))
        .await;
    assert_eq!(answer.status, 404, "{:#}", answer.body);
    assert_eq!(error_text(&answer), "no policy has the labels team=orders");
    assert!(one(&records).detail.contains("orders-db"));
    assert_eq!(h.control.calls().len(), 2);

    // A policy that requires a ticket, without one: 400 naming it, nothing queued.
    let answer = bulk(
        h.tokens.ci_sa.clone(),
        json!({"selector": {"tier": "db"}, "reason": "r"}),
    )
    .await;
    assert_eq!(answer.status, 400, "{:#}", answer.body);
    assert!(
        error_text(&answer).contains("orders-db"),
        "{}",
        error_text(&answer)
    );
    assert!(error_text(&answer).contains("ticket"));
    assert_eq!(h.control.calls().len(), 2);

    // Compromise needs the identity's permission.
    let answer = bulk(
        payments.clone(),
        json!({"selector": {"team": "payments"}, "reason": "leak", "compromise": true}),
    )
    .await;
    assert_eq!(answer.status, 403, "{:#}", answer.body);
    assert_eq!(h.control.calls().len(), 2);

    // An empty selector would select everything: refused. No match: 404.
    let answer = bulk(payments.clone(), json!({"selector": {}, "reason": "r"})).await;
    assert_eq!(answer.status, 400, "{:#}", answer.body);
    let answer = bulk(payments.clone(), json!({"reason": "r"})).await;
    assert_eq!(answer.status, 400, "{:#}", answer.body);
    let answer = bulk(
        payments.clone(),
        json!({"selector": {"team": "nobody"}, "reason": "r"}),
    )
    .await;
    assert_eq!(answer.status, 404, "{:#}", answer.body);
    assert!(error_text(&answer).contains("team=nobody"));
    let answer = bulk(
        payments.clone(),
        json!({"selector": {"team": "payments"}, "extra": 1}),
    )
    .await;
    assert_eq!(answer.status, 400, "{:#}", answer.body);
    assert_eq!(h.control.calls().len(), 2);

    // The agent refuses one policy (busy): the other is still queued, and the answer
    // says which is which with the status a single request would have got.
    *h.control.next_error.lock().unwrap() = Some(ControlError::Busy(
        "policy payments-cache has an open rotation".into(),
    ));
    let (answer, records) = h
        .audited(bulk(
            h.tokens.ci_sa.clone(),
            json!({"selector": {"team": "payments"}, "reason": "again"}),
        ))
        .await;
    assert_eq!(answer.status, 202, "{:#}", answer.body);
    assert_eq!(answer.body["accepted"], 1);
    assert_eq!(answer.body["refused"], 1);
    let first = &answer.body["policies"][0];
    assert_eq!(first["policy"], "payments-cache");
    assert_eq!(first["status"], 409);
    assert!(first["error"].as_str().unwrap().contains("open rotation"));
    assert!(answer.body["policies"][1]["rotation_id"].is_string());
    assert_eq!(records.len(), 3);
    assert_eq!(records[1].outcome, Outcome::Failed);
    assert_eq!(records[1].status, 409);

    // Without a token: 401 before anything else.
    let answer = h
        .send(
            "POST",
            "/v1/rotations",
            None,
            Some(json!({"selector": {"team": "payments"}})),
        )
        .await;
    assert_eq!(answer.status, 401);

    // The CLI's client function.
    let token = SecretString::from(payments.clone());
    let answer = client(&h.base, &token)
        .rotate_selected(&BulkRotateBody {
            selector: BTreeMap::from([("tier".to_owned(), "cache".to_owned())]),
            reason: Some("via client".into()),
            ticket: None,
            compromise: Some(false),
        })
        .await
        .unwrap();
    assert_eq!(answer.accepted, 1);
    assert_eq!(answer.policies[0].policy, "payments-cache");
    let err = client(&h.base, &token)
        .rotate_selected(&BulkRotateBody {
            selector: BTreeMap::from([("tier".to_owned(), "db".to_owned())]),
            reason: Some("r".into()),
            ticket: Some("T".into()),
            compromise: Some(false),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemoteError::Status { status: 403, .. }),
        "{err}"
    );

    h.assert_no_token_leaked();
    h.shutdown().await;
}
