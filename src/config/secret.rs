//! Secrets: the [`Secret`] value that never shows itself, and where the file says one comes
//! from ([`SecretSource`], and a custom header's [`HeaderSource`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret value. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    /// The secret itself: call only where it is used (signing, comparing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    Literal(String),
    Env { env: String },
    File { file: PathBuf },
    Credential { credential: String },
}

const SECRET_FORMS: &str =
    "a secret is a string, { env = \"NAME\" }, { file = \"/path\" } or { credential = \"NAME\" }";

// Written by hand rather than derived (untagged), so that a mistake is named plainly instead of
// "data did not match any variant".
impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(SecretSource::Literal(s)),
            toml::Value::Table(table) => {
                let mut entries = table.into_iter();
                let (Some((key, value)), None) = (entries.next(), entries.next()) else {
                    return Err(D::Error::custom(format!(
                        "expected exactly one key: {SECRET_FORMS}"
                    )));
                };
                let toml::Value::String(value) = value else {
                    return Err(D::Error::custom(format!(
                        "`{key}` must be a string: {SECRET_FORMS}"
                    )));
                };
                match key.as_str() {
                    "env" => Ok(SecretSource::Env { env: value }),
                    "file" => Ok(SecretSource::File {
                        file: PathBuf::from(value),
                    }),
                    "credential" => Ok(SecretSource::Credential { credential: value }),
                    other => Err(D::Error::custom(format!(
                        "unknown key `{other}`: {SECRET_FORMS}"
                    ))),
                }
            }
            other => Err(D::Error::custom(format!(
                "found a {}: {SECRET_FORMS}",
                other.type_str()
            ))),
        }
    }
}

impl SecretSource {
    /// The secret itself: from the file, the environment, a file or a systemd credential.
    pub(super) fn resolve(&self) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Literal(s) => s.clone(),
            SecretSource::Env { env } => std::env::var(env)
                .map_err(|_| format!("environment variable {env} is not set (or not UTF-8)"))?,
            SecretSource::File { file } => read_secret_file(file)?,
            SecretSource::Credential { credential } => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!("credential {credential}: $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)")
                })?;
                read_secret_file(&Path::new(&dir).join(credential))?
            }
        };
        if value.is_empty() {
            return Err("secret is empty".to_string());
        }
        Ok(Secret(value))
    }
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    // Files written by `echo` end in a newline that is not part of the secret.
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// A custom header's value as written: a plain string (shown by the API and the dashboard), or a
/// secret: `{ secret = "..." }`, `{ env = "NAME" }`, `{ file = "/path" }` or
/// `{ credential = "NAME" }` (never shown, never logged).
#[derive(Debug, Clone)]
pub(super) enum HeaderSource {
    Plain(String),
    Secret(SecretSource),
}

impl<'de> Deserialize<'de> for HeaderSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IntoDeserializer};
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(HeaderSource::Plain(s)),
            toml::Value::Table(table) if table.len() == 1 && table.contains_key("secret") => {
                match table.get("secret") {
                    Some(toml::Value::String(s)) => {
                        Ok(HeaderSource::Secret(SecretSource::Literal(s.clone())))
                    }
                    _ => Err(D::Error::custom("`secret` must be a string")),
                }
            }
            toml::Value::Table(table) => SecretSource::deserialize(
                toml::Value::Table(table).into_deserializer(),
            )
            .map(HeaderSource::Secret)
            .map_err(|e| D::Error::custom(format!("{e}, or {{ secret = \"...\" }}"))),
            other => Err(D::Error::custom(format!(
                "found a {}: a header value is a string or a secret ({SECRET_FORMS}, or {{ secret = \"...\" }})",
                other.type_str()
            ))),
        }
    }
}
