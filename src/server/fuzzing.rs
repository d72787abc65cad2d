//! The API's request bodies read as the handlers read them, for [`crate::fuzzing`].

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{Method, Uri};

use super::{Denial, ReleaseBody, RequestAudit, RotateBody, json_body, reason_and_ticket};
use super::{approval::ApproveBody, bulk::BulkBody, bulk::selector_text, retire::Body};

/// Reads `data` as the body of rotate, release, retire/enable, approve and bulk rotate,
/// each through `json_body` and `reason_and_ticket` as its handler does, then renders
/// the audit record and any refusal. Returns how many bodies were accepted.
pub fn request_bodies(data: &[u8]) -> usize {
    let body = Bytes::copy_from_slice(data);
    let mut accepted = 0;
    let mut done = |mut record: RequestAudit, result: Result<(), Denial>| {
        match result {
            Ok(()) => accepted += 1,
            Err(denial) => {
                record.detail = denial.detail.clone().unwrap_or(denial.message.clone());
                let _ = denial.response();
            }
        }
        let _ = serde_json::to_string(&record);
    };

    let mut record = fresh();
    let result = json_body::<RotateBody>(&body, "rotate")
        .and_then(|b| reason_and_ticket(&mut record, b.reason, b.ticket).map(drop));
    done(record, result);

    let mut record = fresh();
    let result = json_body::<ReleaseBody>(&body, "release")
        .and_then(|b| reason_and_ticket(&mut record, b.reason, None).map(drop));
    done(record, result);

    let mut record = fresh();
    let result = json_body::<Body>(&body, "retire")
        .and_then(|b| reason_and_ticket(&mut record, b.reason, b.ticket).map(drop));
    done(record, result);

    let mut record = fresh();
    let result = json_body::<ApproveBody>(&body, "approve")
        .and_then(|b| reason_and_ticket(&mut record, b.reason, None).map(drop));
    done(record, result);

    let mut record = fresh();
    let result = json_body::<BulkBody>(&body, "bulk").and_then(|b| {
        reason_and_ticket(&mut record, b.reason, b.ticket)?;
        let _ = selector_text(&b.selector);
        Ok(())
    });
    done(record, result);

    accepted
}

/// A request record as the handlers start it.
fn fresh() -> RequestAudit {
    let uri = Uri::from_static("/v1/policies/fuzz/rotate");
    RequestAudit::new(&Method::POST, &uri, SocketAddr::from(([127, 0, 0, 1], 0)))
}
