//! What a setting is: name, scope, kind (type, range or choices), what happens when it is
//! unset, and a one-line doc. The declarations themselves are in `declare.rs`.

pub use crate::secret::MIN_SECRET_CHARS;

/// Who a setting belongs to. Several Messenger accounts in one deployment would each have
/// their own value of every `Account` setting; `Deployment` settings stay one per service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One Messenger account: its Page, Meta apps, tokens, bot texts, Dialogflow agent.
    Account,
    /// The running service: listener, store, job worker, logs.
    Deployment,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Deployment => "deployment",
        }
    }
}

/// The type of a value, with its range or choices. Every value is trimmed first; an empty
/// value counts as unset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any text.
    Text,
    /// Any text of at least [`MIN_SECRET_CHARS`]; redacted in `Debug` output, never logged.
    Secret,
    /// A text sent to a user: at most 2000 characters (the Send API's limit).
    Message,
    /// An IP address, or `localhost`.
    Host,
    /// A numeric Meta id; the word names it in the problem ("app id", "Page id").
    MetaId(&'static str),
    /// An `https` or `http` URL; a trailing `/` is removed.
    BaseUrl,
    /// An `https` or `http` URL that is itself a credential (a Slack or Google Chat incoming
    /// webhook carries its key in the path or query): redacted like a secret, never shown.
    SecretUrl,
    /// `sqlite:…` (embedded) or `postgres://…`.
    DatabaseUrl,
    /// A Graph API version, `vNN.N`.
    GraphVersion,
    /// A Google Cloud region id (lower-case letters, digits, `-`).
    Region,
    /// The path of an existing file.
    File,
    /// Comma-separated (a TOML array in the file), at least one entry.
    List,
    /// A whole number within `min..=max`.
    Number { min: u64, max: u64 },
    /// One of these words, in any case.
    Choice(&'static [&'static str]),
}

/// What an unset (or empty) setting means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfUnset {
    /// This value, which must pass the setting's own check.
    Default(&'static str),
    /// A problem: `NAME: required (meaning)`.
    Required(&'static str),
    /// Nothing, or something derived in code; the text says what, for the README.
    Optional(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub scope: Scope,
    pub kind: Kind,
    pub if_unset: IfUnset,
    pub doc: &'static str,
}

impl Spec {
    /// `value` (trimmed, not empty) checked against the kind: normalized, or the problem
    /// without the leading name.
    pub fn check(&self, value: &str) -> Result<String, String> {
        match self.kind {
            Kind::Text => Ok(value.to_owned()),
            // The value is never repeated in the problem.
            Kind::Secret if value.chars().count() < MIN_SECRET_CHARS => Err(format!(
                "shorter than {MIN_SECRET_CHARS} characters; a secret must be longer (use the \
                 value Meta or your own generator gives, e.g. `openssl rand -hex 16`)"
            )),
            Kind::Secret => Ok(value.to_owned()),
            Kind::Message => {
                // The Send API limit for a text message.
                if value.chars().count() > 2000 {
                    Err("longer than Messenger's 2000 characters".into())
                } else {
                    Ok(value.to_owned())
                }
            }
            Kind::Host => {
                if value.parse::<std::net::IpAddr>().is_ok() || value == "localhost" {
                    Ok(value.to_owned())
                } else {
                    Err(format!("{value:?} is not an IP address"))
                }
            }
            Kind::MetaId(what) => match crate::limits::meta_id_problem(value) {
                None => Ok(value.to_owned()),
                Some(_) if value.chars().count() > 40 => {
                    Err(format!("is not a numeric Meta {what}"))
                }
                Some(problem) => Err(format!(
                    "{value:?} is not a numeric Meta {what}: it {problem}"
                )),
            },
            Kind::BaseUrl => http_url(value).map(|()| value.trim_end_matches('/').to_owned()),
            // Kept as given (a webhook's path is its own); the problem names only the scheme.
            Kind::SecretUrl => http_url(value).map(|()| value.to_owned()),
            Kind::DatabaseUrl => {
                if ["sqlite:", "postgres://", "postgresql://"]
                    .iter()
                    .any(|p| value.starts_with(p))
                {
                    Ok(value.to_owned())
                } else {
                    Err(
                        "must start with sqlite:// (embedded) or postgres:// (several replicas)"
                            .into(),
                    )
                }
            }
            Kind::GraphVersion => {
                if is_graph_version(value) {
                    Ok(value.to_owned())
                } else {
                    Err(format!("{value:?} is not of the form vNN.0"))
                }
            }
            Kind::Region => {
                if value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                {
                    Ok(value.to_owned())
                } else {
                    Err(format!("{value:?} is not a region id"))
                }
            }
            Kind::File => {
                if std::path::Path::new(value).is_file() {
                    Ok(value.to_owned())
                } else {
                    Err(format!("{value} is not a readable file"))
                }
            }
            Kind::List => {
                if split_list(value).is_empty() {
                    Err("needs at least one comma-separated entry".into())
                } else {
                    Ok(value.to_owned())
                }
            }
            Kind::Number { min, max } => match value.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n.to_string()),
                Ok(_) => Err(format!("{value} is out of range ({min}..={max})")),
                Err(_) => Err(format!("{value:?} is not a whole number")),
            },
            Kind::Choice(choices) => {
                let lower = value.to_ascii_lowercase();
                if choices.contains(&lower.as_str()) {
                    Ok(lower)
                } else {
                    Err(format!("{lower:?} is not one of {}", choices.join(", ")))
                }
            }
        }
    }

    /// One problem line: it starts with the name.
    pub fn problem(&self, what: impl std::fmt::Display) -> String {
        format!("{}: {what}", self.name)
    }
}

/// An `https` or `http` URL, or the problem (which never repeats the value).
fn http_url(value: &str) -> Result<(), String> {
    const SCHEMES: [&str; 2] = ["https", "http"];
    match url::Url::parse(value) {
        Ok(u) if SCHEMES.contains(&u.scheme()) => Ok(()),
        Ok(u) => Err(format!(
            "scheme {:?} not supported (use {})",
            u.scheme(),
            SCHEMES.join(" or ")
        )),
        Err(e) => Err(format!("not a URL ({e})")),
    }
}

pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) fn is_graph_version(v: &str) -> bool {
    v.strip_prefix('v')
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(major, minor)| {
            !major.is_empty()
                && major.chars().all(|c| c.is_ascii_digit())
                && !minor.is_empty()
                && minor.chars().all(|c| c.is_ascii_digit())
        })
}

/// Mistakes in a declaration, one line each: a default that fails its own check, a
/// duplicate or badly formed name, an empty range or choice list, a missing doc.
pub fn declaration_problems(specs: &[&Spec]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let name = spec.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            problems.push(format!("{name:?}: not an upper-case variable name"));
        }
        if specs[..i].iter().any(|other| other.name == name) {
            problems.push(spec.problem("declared twice"));
        }
        if spec.doc.trim().is_empty() || spec.doc.contains('\n') {
            problems.push(spec.problem("needs a one-line doc"));
        }
        match spec.kind {
            Kind::Number { min, max } if min > max => {
                problems.push(spec.problem(format!("empty range {min}..={max}")));
            }
            Kind::Choice(choices)
                if choices.is_empty() || choices.iter().any(|c| c.to_ascii_lowercase() != *c) =>
            {
                problems.push(spec.problem("choices must be lower-case and at least one"));
            }
            _ => {}
        }
        match spec.if_unset {
            IfUnset::Default(value) => match spec.check(value.trim()) {
                Ok(_) if value.trim().is_empty() => {
                    problems.push(spec.problem("an empty default reads as unset"))
                }
                Ok(_) => {}
                Err(e) => problems.push(spec.problem(format!("the default fails its check: {e}"))),
            },
            IfUnset::Required(meaning) | IfUnset::Optional(meaning) => {
                if meaning.trim().is_empty() {
                    problems.push(spec.problem("says nothing about being unset"));
                }
            }
        }
    }
    problems
}

/// The README's settings table, rendered from the declarations.
pub fn markdown_table(specs: &[&Spec]) -> String {
    let mut out =
        String::from("| Variable | Default | Accepts | Scope | Meaning |\n|---|---|---|---|---|\n");
    for spec in specs {
        let default = match spec.if_unset {
            IfUnset::Default(value) => format!("`{value}`"),
            IfUnset::Required(_) => "required".to_owned(),
            IfUnset::Optional(text) => text.to_owned(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            spec.name,
            cell(&default),
            cell(&accepts(spec.kind)),
            spec.scope.as_str(),
            cell(spec.doc.trim()),
        ));
    }
    out
}

fn accepts(kind: Kind) -> String {
    match kind {
        Kind::Text => "text".into(),
        Kind::Secret => format!("text (secret), at least {MIN_SECRET_CHARS} characters"),
        Kind::Message => "text, at most 2000 characters".into(),
        Kind::Host => "IP address or `localhost`".into(),
        Kind::MetaId(_) => format!("digits (at most {})", crate::limits::MAX_META_ID_DIGITS),
        Kind::BaseUrl => "`https://` or `http://` URL".into(),
        Kind::SecretUrl => "`https://` or `http://` URL (secret)".into(),
        Kind::DatabaseUrl => "`sqlite://…` or `postgres://…`".into(),
        Kind::GraphVersion => "`vNN.N`".into(),
        Kind::Region => "region id".into(),
        Kind::File => "path of a file".into(),
        Kind::List => "comma-separated list".into(),
        Kind::Number { min, max } => format!("whole number, {min} to {max}"),
        Kind::Choice(choices) => choices
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A table cell: `|` would end it.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}
