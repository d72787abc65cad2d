//! Log capture for tests that check what rotor logs (and that it logs no secret).
//!
//! One global subscriber for the whole test binary, writing to the calling thread's
//! buffer. A per-test `tracing::subscriber::set_default` races with other tests of the
//! same binary registering the same log call sites (tracing caches each call site's
//! interest), so a test could miss its own lines now and then. tokio tests run on one
//! thread, so the tasks a test spawns log into its buffer too.
//!
//! Included with `#[path = "common/logs.rs"] mod logs;`; it needs only `tracing` and
//! `tracing-subscriber`.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

/// Log lines written on one test's thread since [`capture_logs`].
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything captured so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

thread_local! {
    static CAPTURE: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

/// Writes to the calling thread's [`Captured`], if it has one.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(c) = c.borrow().as_ref() {
                c.0.lock().expect("log buffer").extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the binary's one subscriber (TRACE, no colours) the first time, and
/// starts capturing this thread's log lines: call it first in a test.
pub fn capture_logs() -> Captured {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| ThreadWriter)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("global subscriber");
    });
    let captured = Captured::default();
    CAPTURE.with(|c| *c.borrow_mut() = Some(captured.clone()));
    captured
}
