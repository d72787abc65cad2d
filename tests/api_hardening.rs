//! The API under attack, through the `rotor run` binary: random bearer tokens are
//! throttled per peer before authentication and counted in the audit log instead of
//! flooding it; oversized bodies and undecodable paths are authenticated first,
//! answered in JSON and audited; request values cannot forge log lines; and an
//! identity cannot tell a policy it is not granted from one that does not exist.
//! Peers are told apart by source address: clients bind to 127.0.0.x (Linux routes
//! all of 127.0.0.0/8 to loopback). Needs `dev/stack up`.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::agent::Agent;
use common::{Fixture, Options, text};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP client whose connections come from `ip`.
fn client_from(ip: &str) -> reqwest::Client {
    let ip: IpAddr = ip.parse().expect("ip");
    reqwest::Client::builder()
        .local_address(ip)
        .build()
        .expect("client")
}

/// Every audit record of kind `request`.
fn request_records(agent: &Agent) -> Vec<Value> {
    std::fs::read_to_string(&agent.audit)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter(|r| r["event"] == "request")
        .collect()
}

fn from_peer<'a>(records: &'a [Value], ip: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| {
            r["remote"]
                .as_str()
                .is_some_and(|a| a.starts_with(&format!("{ip}:")))
        })
        .collect()
}

/// A raw HTTP/1.1 exchange from `from`: `head` (request line and headers, without the
/// blank line), then `body` written in the background while the answer is read.
/// Returns the status, the header block and the body as JSON (`Value::String` when
/// it is not JSON).
async fn raw(agent: &Agent, from: &str, head: &str, body: Vec<u8>) -> (u16, String, Value) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from.parse().expect("ip"), 0))
        .expect("bind");
    let addr: SocketAddr = agent
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let stream = socket.connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let request = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let sender = tokio::spawn(async move {
        // The server may answer and close before reading it all: errors are expected.
        if writer.write_all(request.as_bytes()).await.is_ok() {
            let _ = writer.write_all(&body).await;
        }
        writer
    });
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let (status, headers, answer) = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&bytes[..end]).to_string();
            let length = headers
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .expect("content-length");
            if bytes.len() >= end + 4 + length {
                let status = headers
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status");
                let body = String::from_utf8_lossy(&bytes[end + 4..end + 4 + length]).to_string();
                let answer = serde_json::from_str(&body).unwrap_or(Value::String(body));
                break (status, headers, answer);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), reader.read(&mut chunk))
            .await
            .expect("an answer within 30 s")
            .expect("read");
        assert!(n > 0, "connection closed before a whole answer: {bytes:?}");
        bytes.extend_from_slice(&chunk[..n]);
    };
    sender.abort();
    (status, headers, answer)
}

fn is_json(headers: &str) -> bool {
    headers
        .to_ascii_lowercase()
        .contains("content-type: application/json")
}

/// Issue 14, defect 3: 200 requests with random tokens from one peer. The peer gets a
/// burst of 401s, then 429 with Retry-After whatever the token (a good one too), while
/// another peer is served; the audit log holds a dozen records whose counts add up to
/// every request.
#[tokio::test]
async fn random_tokens_are_throttled_per_peer_and_counted_in_the_audit() {
    let fx = Fixture::new("throttle", Options::default()).await;
    let mut agent = Agent::start(&fx, &[]);
    agent.ready().await;
    let url = format!("{}/v1/policies", agent.base);
    let attacker = client_from("127.0.0.2");

    let started = Instant::now();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for i in 0..200 {
        let answer = attacker
            .get(&url)
            .bearer_auth(rotor_testkit::canary())
            .send()
            .await
            .expect("request");
        let status = answer.status().as_u16();
        if i < 20 {
            assert_eq!(status, 401, "request {i}: the burst is answered 401");
        }
        if status == 429 {
            let retry: u64 = answer.headers()[RETRY_AFTER]
                .to_str()
                .expect("header")
                .parse()
                .expect("Retry-After in seconds");
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
        }
        assert!(
            answer.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let body: Value = answer.json().await.expect("JSON body");
        assert!(body["error"].is_string(), "{body}");
        *statuses.entry(status).or_default() += 1;
    }
    let elapsed = started.elapsed();
    let unauthorized = statuses.get(&401).copied().unwrap_or_default();
    let throttled = statuses.get(&429).copied().unwrap_or_default();
    assert_eq!(unauthorized + throttled, 200, "{statuses:?}");
    // 20 at once, then one more every 3 s: a bound that holds however slow the run.
    let budget = 20 + elapsed.as_secs() / 3 + 1;
    assert!(
        unauthorized <= budget,
        "{unauthorized} × 401 in {elapsed:?}: {statuses:?}"
    );
    assert!(throttled >= 1, "{statuses:?}");

    // The throttled peer is refused before its token is looked at: a good token waits too.
    let answer = attacker
        .get(&url)
        .bearer_auth(&agent.token)
        .send()
        .await
        .expect("request");
    assert_eq!(answer.status(), 429);
    // Another peer is served.
    let answer = client_from("127.0.0.3")
        .get(&url)
        .bearer_auth(&agent.token)
        .send()
        .await
        .expect("request");
    assert_eq!(answer.status(), 200);

    // Stopping writes what is still counted.
    agent.terminate().await;
    let records = request_records(&agent);
    let attacks = from_peer(&records, "127.0.0.2");
    let total: u64 = attacks.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 201, "every request is counted: {attacks:#?}");
    // Per minute at most: the first five 401s and 429s one by one, and one count of each.
    let minutes = elapsed.as_secs() / 60 + 1;
    assert!(
        attacks.len() as u64 <= 12 * minutes,
        "{} records for 201 requests: {attacks:#?}",
        attacks.len()
    );
    let bytes: usize = attacks.iter().map(|r| r.to_string().len()).sum();
    eprintln!(
        "statuses {statuses:?} in {elapsed:?}; {} audit records ({bytes} bytes) for 201 requests",
        attacks.len()
    );
    assert!(
        (bytes as u64) < 8 * 1024 * minutes,
        "{bytes} bytes of audit records"
    );
    assert!(
        attacks.iter().any(|r| r["count"].as_u64().unwrap() > 1
            && r["detail"]
                .as_str()
                .unwrap()
                .contains("more refused requests")),
        "{attacks:#?}"
    );
    for r in &attacks {
        assert_eq!(r["identity"], "anonymous");
        assert!(r["status"] == 401 || r["status"] == 429, "{r}");
    }
    let served = from_peer(&records, "127.0.0.3");
    assert_eq!(served.len(), 1, "{served:#?}");
    assert_eq!(
        (served[0]["status"].as_u64(), served[0]["count"].as_u64()),
        (Some(200), Some(1))
    );

    // Still one intact hash chain.
    let out = fx
        .rotor()
        .args(["audit", "verify"])
        .arg(&agent.audit)
        .output()
        .expect("rotor audit verify");
    assert!(out.status.success(), "{}", text(&out));
    // The log is not flooded either: refusals are logged as they are audited.
    let log = agent.log_text();
    let warned = log
        .lines()
        .filter(|l| l.contains("API request refused.") && l.contains("127.0.0.2:"))
        .count();
    assert!(warned as u64 <= 12 * minutes, "{warned} warnings");
}

/// Issue 14, defect 4: a 10 MB body and a path that is not UTF-8 are authenticated
/// first (401 without a token), then refused in JSON (413, 400) and audited, like
/// unknown endpoints and methods.
#[tokio::test]
async fn oversized_bodies_and_bad_paths_are_authenticated_answered_in_json_and_audited() {
    let fx = Fixture::new("refusals", Options::default()).await;
    let agent = Agent::start(&fx, &[]);
    agent.ready().await;
    let token = agent.token.clone();
    let big = vec![b'x'; 10 * 1024 * 1024];
    let rotate = format!("POST /v1/policies/{}/rotate HTTP/1.1", fx.name);
    let length = format!(
        "Content-Type: application/json\r\nContent-Length: {}",
        big.len()
    );

    let (status, headers, body) = raw(
        &agent,
        "127.0.0.4",
        &format!("{rotate}\r\n{length}"),
        big.clone(),
    )
    .await;
    assert_eq!(status, 401, "{headers}\n{body}");
    assert!(
        is_json(&headers) && body["error"].is_string(),
        "{headers}\n{body}"
    );

    let head = format!("{rotate}\r\nAuthorization: Bearer {token}\r\n{length}");
    let (status, headers, body) = raw(&agent, "127.0.0.5", &head, big).await;
    assert_eq!(status, 413, "{headers}\n{body}");
    assert!(is_json(&headers), "{headers}\n{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("larger than 65536 bytes"),
        "{body}"
    );

    let bad_path = "GET /v1/policies/x%FF%FE HTTP/1.1";
    let (status, headers, body) = raw(&agent, "127.0.0.6", bad_path, Vec::new()).await;
    assert_eq!(status, 401, "{headers}\n{body}");
    assert!(is_json(&headers), "{headers}\n{body}");
    let head = format!("{bad_path}\r\nAuthorization: Bearer {token}");
    let (status, headers, body) = raw(&agent, "127.0.0.7", &head, Vec::new()).await;
    assert_eq!(status, 400, "{headers}\n{body}");
    assert!(
        is_json(&headers) && body["error"].is_string(),
        "{headers}\n{body}"
    );

    for (head, want) in [
        ("GET /v1/nothing HTTP/1.1".to_owned(), 404),
        (format!("DELETE /v1/policies/{} HTTP/1.1", fx.name), 405),
    ] {
        let head = format!("{head}\r\nAuthorization: Bearer {token}");
        let (status, headers, body) = raw(&agent, "127.0.0.7", &head, Vec::new()).await;
        assert_eq!(status, want, "{headers}\n{body}");
        assert!(
            is_json(&headers) && body["error"].is_string(),
            "{headers}\n{body}"
        );
    }

    // Each refusal has its record (written before the answer was sent).
    let records = request_records(&agent);
    let find = |ip: &str, status: u16| -> Value {
        from_peer(&records, ip)
            .into_iter()
            .find(|r| r["status"] == status)
            .cloned()
            .unwrap_or_else(|| panic!("no {status} record from {ip} in {records:#?}"))
    };
    let r = find("127.0.0.4", 401);
    assert_eq!(
        (r["identity"].as_str(), r["method"].as_str()),
        (Some("anonymous"), Some("POST"))
    );
    let r = find("127.0.0.5", 413);
    assert_eq!(r["identity"], "ops");
    assert!(r["detail"].as_str().unwrap().contains("larger than"), "{r}");
    let r = find("127.0.0.6", 401);
    assert_eq!(r["path"], "/v1/policies/x%FF%FE");
    let r = find("127.0.0.7", 400);
    assert_eq!(
        (r["identity"].as_str(), r["path"].as_str()),
        (Some("ops"), Some("/v1/policies/x%FF%FE"))
    );
    assert_eq!(find("127.0.0.7", 404)["identity"], "ops");
    assert_eq!(find("127.0.0.7", 405)["identity"], "ops");
}

/// Issue 14, defect 5: a policy name with a newline and ANSI escapes, taken from the
/// path, is logged escaped: no forged line, no raw escape byte in the log.
#[tokio::test]
async fn control_characters_from_requests_cannot_forge_log_lines() {
    let fx = Fixture::new("inject", Options::default()).await;
    let agent = Agent::start(&fx, &[]);
    agent.ready().await;
    let http = reqwest::Client::new();
    for path in [
        "/v1/policies/x%0A2026-01-01T00:00:00Z%20ERROR%20forged/rotate",
        "/v1/policies/%1B%5B2J%1B%5B31mred%0D2026-01-01T00:00:00Z%20ERROR%20forged/rotate",
    ] {
        let answer = http
            .post(format!("{}{path}", agent.base))
            .bearer_auth(&agent.token)
            .json(&json!({"reason": "test"}))
            .send()
            .await
            .expect("request");
        assert_eq!(answer.status(), 404);
    }
    let log = agent.log_text();
    assert!(
        log.contains("x\\n2026-01-01T00:00:00Z ERROR forged"),
        "the refusal is logged, escaped:\n{log}"
    );
    assert!(log.contains("\\x1b[31mred\\r2026"), "escaped:\n{log}");
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00Z"),
            "forged line: {line:?}"
        );
    }
    assert!(!log.contains('\u{1b}'), "a raw ESC in the log");
    assert!(!log.contains('\r'), "a raw CR in the log");
}

/// Issue 14, gap: an identity not granted a policy gets the same answer for it as
/// for a name that does not exist; names it is granted still get 404 when missing.
#[tokio::test]
async fn ungranted_and_missing_policies_get_the_same_answer() {
    let fx = Fixture::new("hidden", Options::default()).await;
    let stranger = rotor_testkit::canary();
    let agent = Agent::start_configured(
        &fx,
        &[("STRANGER_TOKEN", &stranger)],
        &[],
        "  - name: stranger\n    tokenFrom: {env: STRANGER_TOKEN}\n    policies: [granted-but-missing]\n",
    );
    agent.ready().await;
    let http = reqwest::Client::new();
    let missing = rotor_testkit::unique("missing");
    let ask = |method: &str, name: &str, token: &str| {
        let (url, request) = match method {
            "GET" => {
                let url = format!("{}/v1/policies/{name}", agent.base);
                (url.clone(), http.get(url))
            }
            _ => {
                let url = format!("{}/v1/policies/{name}/rotate", agent.base);
                (
                    url.clone(),
                    http.post(url).json(&json!({"reason": "probe"})),
                )
            }
        };
        let request = request.bearer_auth(token);
        async move {
            let answer = request.send().await.expect(&url);
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.expect("JSON"))
        }
    };
    for method in ["GET", "POST"] {
        let (s1, b1) = ask(method, &fx.name, &stranger).await;
        let (s2, b2) = ask(method, &missing, &stranger).await;
        assert_eq!(s1, 403, "{method} existing: {b1}");
        assert_eq!(s1, s2, "{method}: {b1} vs {b2}");
        let shape = |b: &Value, name: &str| {
            let mut b = b.clone();
            if let Some(e) = b["error"].as_str() {
                b["error"] = Value::String(e.replace(name, "NAME"));
            }
            b
        };
        assert_eq!(shape(&b1, &fx.name), shape(&b2, &missing), "{method}");
    }
    // A name the identity is granted, or any name for `*`, is 404 when missing.
    let (status, body) = ask("GET", "granted-but-missing", &stranger).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = ask("GET", &missing, &agent.token).await;
    assert_eq!(status, 404, "{body}");
    // The audit record tells them apart.
    let records = request_records(&agent);
    let about_missing = records
        .iter()
        .find(|r| r["identity"] == "stranger" && r["policy"] == missing.as_str())
        .expect("a record of the probe");
    assert!(
        about_missing["detail"]
            .as_str()
            .unwrap()
            .contains("no policy of that name"),
        "{about_missing}"
    );
}
