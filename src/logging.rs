//! The log pipeline `rotor` sets up on stderr ([`crate::cli::init_tracing`]): what is
//! let through, and how text lines are written.
//!
//! - **A hard cap on other crates' logs.** Events and spans of any target outside
//!   rotor are let through up to `info` only (`kube_client` up to `error`; `rustify`
//!   and `vaultrs` never), *whatever RUST_LOG says*: the cap is a second filter beside
//!   RUST_LOG's, and an event must pass both, so no directive —
//!   `tokio_postgres::simple_query=trace` included — can lift it. Dependencies log SQL
//!   text (`ALTER ROLE … PASSWORD 'SCRAM-SHA-256$…'`), request bodies and API error
//!   bodies at debug/trace.
//! - **No forged lines.** In the text format every field value (and the message) is
//!   written with its control characters escaped: a newline as `\n`, ESC as `\x1b`,
//!   other C0/C1 controls as `\xNN` or `\u{…}`, and Unicode line separators and
//!   bidirectional overrides as `\u{…}`. A value taken from a request (a policy name
//!   in a path) can therefore neither start a new log line nor move the terminal's
//!   cursor. Colours are used only when stderr is a terminal. The JSON format escapes
//!   control characters itself.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, fmt as tfmt};

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// Whether the cap lets an event or span with this metadata through (see the module
/// documentation): rotor's own targets at every level, other crates up to `info`.
pub fn within_cap(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let root = target.split("::").next().unwrap_or(target);
    let most = match root {
        "rotor" => return true,
        "rustify" | "vaultrs" => return false,
        "kube_client" => Level::ERROR,
        _ => Level::INFO,
    };
    *meta.level() <= most
}

/// The stderr log layer: `filter` (RUST_LOG or the `-v` default) and the hard cap,
/// formatted as `format`, written to `writer`.
pub fn layer<S, W>(
    filter: EnvFilter,
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter_fn(within_cap).and(filter);
    match format {
        LogFormat::Text => tfmt::layer()
            .fmt_fields(EscapedFields)
            .with_ansi(ansi)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tfmt::layer()
            .json()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    }
}

/// Whether to colour the text format: only on a terminal.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Whether `c` is written escaped.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with control characters escaped (see the module documentation).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let Some(c) = rest[at..].chars().next() else {
                break;
            };
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x100 => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// The text format's fields, like tracing-subscriber's default (`name=value`, the
/// message bare, strings through `Debug`) with every value escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // The `log` crate's metadata, which the formatter shows as the target.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let mut text = String::new();
        if write!(text, "{value:?}").is_err() {
            text = "<unprintable>".to_owned();
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            write!(self.writer, "{separator}{}", Escaped(&text))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{separator}{name}={}", Escaped(&text))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(directives: &str, format: LogFormat, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(layer(
            EnvFilter::new(directives),
            format,
            move || writer.clone(),
            false,
        ));
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn no_directive_lifts_the_cap_on_other_crates() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let text = logged("trace,tokio_postgres::simple_query=trace", format, || {
                tracing::debug!(target: "tokio_postgres::simple_query", "executing simple query: ALTER ROLE r PASSWORD 'SCRAM-SHA-256$4096:x'");
                tracing::trace!(target: "hyper::proto", "body");
                tracing::warn!(target: "kube_client::client", "error body");
                tracing::error!(target: "vaultrs::api", "404");
                tracing::info!(target: "tokio_postgres::connection", "connected");
                tracing::trace!(target: "rotor::engine", "own trace");
            });
            assert!(!text.contains("SCRAM-SHA-256$"), "{text}");
            for absent in ["body", "error body", "404"] {
                assert!(!text.contains(absent), "{absent:?} in {text}");
            }
            assert!(
                text.contains("connected") && text.contains("own trace"),
                "{text}"
            );
        }
    }

    #[test]
    fn control_characters_in_fields_cannot_forge_lines() {
        let forged = "x\n2026-01-01T00:00:00Z ERROR forged \u{1b}[31mred\r\u{2028}\u{202e}";
        let text = logged("trace", LogFormat::Text, || {
            tracing::warn!(target: "rotor::server", path = %forged, policy = forged, "refused {forged}");
            let e = std::io::Error::other(forged);
            tracing::error!(target: "rotor::server", error = &e as &(dyn std::error::Error + 'static), "failed");
        });
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        assert!(
            !text.contains('\u{2028}') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        assert!(
            text.contains(
                "path=x\\n2026-01-01T00:00:00Z ERROR forged \\x1b[31mred\\r\\u{2028}\\u{202e}"
            ),
            "{text}"
        );
        assert!(text.contains("refused x\\n2026"), "{text}");
        assert!(
            text.contains("policy=\"x\\n2026"),
            "strings keep their Debug quoting: {text}"
        );
    }

    #[test]
    fn escaped_leaves_ordinary_text_alone() {
        let plain = "policy payments-db: übergroß, 100% \\n";
        assert_eq!(Escaped(plain).to_string(), plain);
        assert_eq!(Escaped("a\u{7f}b\u{85}").to_string(), "a\\x7fb\\x85");
    }
}
