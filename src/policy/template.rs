//! `{{ var }}` templates: literal text with variable references, rendered from a
//! [`SecretMap`]. No logic, no filters, no escapes: `{{` always opens a reference.

use std::fmt;

use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::secret::{SecretMap, SecretString};

/// A parsed template such as `postgres://{{ username }}:{{ password }}@db:5432/app`.
/// The source holds no secret (only variable names), so `Debug` shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(String),
}

/// Failures of [`Template::parse`] and [`Template::render`]. Never carries a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{{` without a matching `}}`.
    #[error(
        "found `{{{{` at byte {offset} without a closing `}}}}`, expected `{{{{ variable }}}}`"
    )]
    Unclosed {
        /// Byte offset of the `{{`.
        offset: usize,
    },
    /// A reference whose name is not an identifier.
    #[error("found `{{{{ {name} }}}}`, expected a variable name like `{{{{ password }}}}`")]
    BadVariable {
        /// The text between the braces.
        name: String,
    },
    /// Rendering met a variable the map does not hold.
    #[error("template variable `{name}` has no value")]
    MissingVariable {
        /// The variable name.
        name: String,
    },
}

impl TemplateError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TemplateError::Unclosed { .. } => "template_unclosed",
            TemplateError::BadVariable { .. } => "template_bad_variable",
            TemplateError::MissingVariable { .. } => "template_missing_variable",
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parses `source`. Variable names are identifiers (`[A-Za-z_][A-Za-z0-9_]*`),
    /// optionally padded with spaces inside the braces.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        let mut consumed = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(TemplateError::Unclosed {
                    offset: consumed + open,
                });
            };
            let name = after[..close].trim();
            if !is_identifier(name) {
                return Err(TemplateError::BadVariable {
                    name: name.to_owned(),
                });
            }
            parts.push(Part::Var(name.to_owned()));
            let advance = open + 2 + close + 2;
            consumed += advance;
            rest = &rest[advance..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        // Kept for the policy's lifetime: no spare capacity (thousands of policies).
        parts.shrink_to_fit();
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Variable names in order of appearance (repeats included).
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Whether the template references no variable at all.
    pub fn is_literal(&self) -> bool {
        self.variables().next().is_none()
    }

    /// Literal segments in order (no variables).
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Literal(l) => Some(l.as_str()),
            Part::Var(_) => None,
        })
    }

    /// Renders with `vars`. The result is built in a buffer of exact size, so no
    /// unzeroised copy of the secret is left behind by reallocation.
    pub fn render(&self, vars: &SecretMap) -> Result<SecretString, TemplateError> {
        let mut len = 0;
        for part in &self.parts {
            len += match part {
                Part::Literal(l) => l.len(),
                Part::Var(v) => vars
                    .get(v)
                    .ok_or_else(|| TemplateError::MissingVariable { name: v.clone() })?
                    .expose_secret()
                    .len(),
            };
        }
        let mut out = Zeroizing::new(String::with_capacity(len));
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Var(v) => {
                    if let Some(value) = vars.get(v) {
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
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
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
    fn debug_shows_source_only() {
        let t = Template::parse("{{ password }}").unwrap();
        assert_eq!(format!("{t:?}"), "Template(\"{{ password }}\")");
        assert_eq!(t.source(), "{{ password }}");
    }
}
