//! `{{ var }}` templates: literal text with variable references, rendered from a
//! [`SecretMap`]. No logic, no filters, no escapes: `{{` always opens a reference.

use std::fmt;
use std::sync::Arc;

use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use super::shared::SharedValues;
use crate::secret::{SecretMap, SecretString};

/// A parsed template such as `postgres://{{ username }}:{{ password }}@db:5432/app`.
/// The source holds no secret (only variable names), so `Debug` shows it.
///
/// Cheap to clone: policies that write the same template share one parsed copy (a
/// kubernetes consumer's `DATABASE_URL` is often the same in thousands of policies).
#[derive(Clone)]
pub struct Template(Arc<Parsed>);

/// A template's source and its parts as byte ranges of it.
#[derive(Debug)]
struct Parsed {
    source: Box<str>,
    parts: Box<[Part]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// `source[start..end]` as written.
    Literal(usize, usize),
    /// The variable named `source[start..end]`.
    Var(usize, usize),
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        // The parts follow from the source.
        self.0.source == other.0.source
    }
}

impl Eq for Template {}

/// Parsed templates, shared by every loaded policy that writes the same source.
static TEMPLATES: SharedValues<Parsed> = SharedValues::new();

/// Failures of [`Template::parse`] and [`Template::render`]. Never carries a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::IntoStaticStr)]
pub enum TemplateError {
    /// A `{{` without a matching `}}`.
    #[error(
        "found `{{{{` at byte {offset} without a closing `}}}}`, expected `{{{{ variable }}}}`"
    )]
    #[strum(serialize = "template_unclosed")]
    Unclosed {
        /// Byte offset of the `{{`.
        offset: usize,
    },
    /// A reference whose name is not an identifier.
    #[error("found `{{{{ {name} }}}}`, expected a variable name like `{{{{ password }}}}`")]
    #[strum(serialize = "template_bad_variable")]
    BadVariable {
        /// The text between the braces.
        name: String,
    },
    /// Rendering met a variable the map does not hold.
    #[error("template variable `{name}` has no value")]
    #[strum(serialize = "template_missing_variable")]
    MissingVariable {
        /// The variable name.
        name: String,
    },
}

impl TemplateError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        self.into()
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(in crate::policy) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parses `source`. Variable names are identifiers (`[A-Za-z_][A-Za-z0-9_]*`),
    /// optionally padded with spaces inside the braces.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let parsed = TEMPLATES.share(
            source,
            |parsed, source| *parsed.source == **source,
            |source| {
                Ok(Parsed {
                    source: source.into(),
                    parts: parse_parts(source)?.into_boxed_slice(),
                })
            },
        )?;
        Ok(Template(parsed))
    }

    fn text(&self, start: usize, end: usize) -> &str {
        // Ranges were cut at `{{`/`}}` and trimmed whitespace: char boundaries.
        self.0.source.get(start..end).unwrap_or_default()
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// Variable names in order of appearance (repeats included).
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.0.parts.iter().filter_map(|p| match *p {
            Part::Var(start, end) => Some(self.text(start, end)),
            Part::Literal(..) => None,
        })
    }

    /// Whether the template references no variable at all.
    pub fn is_literal(&self) -> bool {
        self.variables().next().is_none()
    }

    /// Literal segments in order (no variables).
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.0.parts.iter().filter_map(|p| match *p {
            Part::Literal(start, end) => Some(self.text(start, end)),
            Part::Var(..) => None,
        })
    }

    /// Renders with `vars`. The result is built in a buffer of exact size, so no
    /// unzeroised copy of the secret is left behind by reallocation.
    pub fn render(&self, vars: &SecretMap) -> Result<SecretString, TemplateError> {
        let mut len = 0;
        for part in self.0.parts.iter() {
            len += match *part {
                Part::Literal(start, end) => self.text(start, end).len(),
                Part::Var(start, end) => {
                    let v = self.text(start, end);
                    vars.get(v)
                        .ok_or_else(|| TemplateError::MissingVariable { name: v.to_owned() })?
                        .expose_secret()
                        .len()
                }
            };
        }
        let mut out = Zeroizing::new(String::with_capacity(len));
        for part in self.0.parts.iter() {
            match *part {
                Part::Literal(start, end) => out.push_str(self.text(start, end)),
                Part::Var(start, end) => {
                    if let Some(value) = vars.get(self.text(start, end)) {
                        out.push_str(value.expose_secret());
                    }
                }
            }
        }
        Ok(SecretString::from(out.as_str()))
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.0.source).finish()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.source)
    }
}

/// The parts of `source` as byte ranges (see [`Template::parse`]).
fn parse_parts(source: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut consumed = 0;
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Literal(consumed, consumed + open));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(TemplateError::Unclosed {
                offset: consumed + open,
            });
        };
        let inner = &after[..close];
        let name = inner.trim();
        if !is_identifier(name) {
            return Err(TemplateError::BadVariable {
                name: name.to_owned(),
            });
        }
        let start = consumed + open + 2 + (inner.len() - inner.trim_start().len());
        parts.push(Part::Var(start, start + name.len()));
        let advance = open + 2 + close + 2;
        consumed += advance;
        rest = &rest[advance..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(consumed, source.len()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> SecretMap {
        let mut m = SecretMap::new();
        m.insert("username", SecretString::from("app"));
        m.insert("password", SecretString::from("s3cr3t-canary"));
        m
    }

    #[test]
    fn renders_variables_and_literals() {
        let t = Template::parse("postgres://{{ username }}:{{password}}@db:5432/app").unwrap();
        assert_eq!(t.variables().collect::<Vec<_>>(), ["username", "password"]);
        let out = t.render(&vars()).unwrap();
        assert_eq!(
            out.expose_secret(),
            "postgres://app:s3cr3t-canary@db:5432/app"
        );
        assert!(!t.is_literal());
    }

    #[test]
    fn literal_only_template() {
        let t = Template::parse("require").unwrap();
        assert!(t.is_literal());
        assert_eq!(
            t.render(&SecretMap::new()).unwrap().expose_secret(),
            "require"
        );
        let empty = Template::parse("").unwrap();
        assert_eq!(empty.render(&SecretMap::new()).unwrap().expose_secret(), "");
    }

    #[test]
    fn missing_variable_names_it_without_values() {
        let t = Template::parse("{{ password }}-{{ token }}").unwrap();
        let err = t.render(&vars()).unwrap_err();
        assert_eq!(
            err,
            TemplateError::MissingVariable {
                name: "token".into()
            }
        );
        assert!(!err.to_string().contains("s3cr3t-canary"));
        assert_eq!(err.kind(), "template_missing_variable");
    }

    #[test]
    fn rejects_bad_syntax() {
        assert!(matches!(
            Template::parse("abc {{ password"),
            Err(TemplateError::Unclosed { offset: 4 })
        ));
        assert!(matches!(
            Template::parse("{{ pass word }}"),
            Err(TemplateError::BadVariable { .. })
        ));
        assert!(matches!(
            Template::parse("{{}}"),
            Err(TemplateError::BadVariable { .. })
        ));
        assert!(matches!(
            Template::parse("{{ 1abc }}"),
            Err(TemplateError::BadVariable { .. })
        ));
    }

    #[test]
    fn equal_sources_share_one_parsed_copy() {
        let a = Template::parse("postgres://{{  username }}:{{password}}@db/app").unwrap();
        let b = Template::parse("postgres://{{  username }}:{{password}}@db/app").unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, b);
        assert_eq!(a.variables().collect::<Vec<_>>(), ["username", "password"]);
        assert_eq!(
            a.literals().collect::<Vec<_>>(),
            ["postgres://", ":", "@db/app"]
        );
        let c = Template::parse("{{ password }}").unwrap();
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        assert_ne!(a, c);
    }

    #[test]
    fn debug_shows_source_only() {
        let t = Template::parse("{{ password }}").unwrap();
        assert_eq!(format!("{t:?}"), "Template(\"{{ password }}\")");
        assert_eq!(t.source(), "{{ password }}");
    }
}
