//! The API's request bodies read as the handlers read them, for [`crate::fuzzing`].

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{Method, Uri};

use super::RequestAudit;
use super::bulk::selector_text;
use super::call::{Justified, read_body};
use crate::api::{ApproveBody, BulkRotateBody, ReleaseBody, RetireBody, RotateBody};

/// Reads `data` as the body of rotate, release, retire/enable, approve and bulk rotate,
/// each through `read_body` as its handler does, then renders the audit record and
/// any refusal. Returns how many bodies were accepted.
pub fn request_bodies(data: &[u8]) -> usize {
    let body = Bytes::copy_from_slice(data);
    let accepted = [
        read::<RotateBody>(&body, |_| ()),
        read::<ReleaseBody>(&body, |_| ()),
        read::<RetireBody>(&body, |_| ()),
        read::<ApproveBody>(&body, |_| ()),
        read::<BulkRotateBody>(&body, |b| drop(selector_text(&b.selector))),
    ];
    accepted.into_iter().filter(|a| *a).count()
}

/// Reads `body` as `T` with a fresh record, hands the body to `then`, and renders
/// the record and any refusal; whether it was accepted.
fn read<T: Justified>(body: &Bytes, then: impl FnOnce(&T)) -> bool {
    let uri = Uri::from_static("/v1/policies/fuzz/rotate");
    let remote = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut record = RequestAudit::new(&Method::POST, &uri, remote);
    let accepted = match read_body::<T>(&mut record, body) {
        Ok(read) => {
            then(&read.body);
            true
        }
        Err(denial) => {
            record.detail = denial.detail.clone().unwrap_or(denial.message.clone());
            let _ = denial.response();
            false
        }
    };
    let _ = serde_json::to_string(&record);
    accepted
}
