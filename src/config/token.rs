//! The API's bearer tokens: as written ([`RawToken`]) and as hookd checks them ([`ApiToken`]).

use serde::Deserialize;

use super::secret::{Secret, SecretSource};

/// An API token as written: a secret, or `{ secret = <secret>, scopes = [...], name = ".." }`.
#[derive(Debug, Clone)]
pub(super) enum RawToken {
    Any(SecretSource),
    Scoped(ScopedToken),
}

impl<'de> Deserialize<'de> for RawToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = toml::Value::deserialize(d)?;
        let scoped = value
            .as_table()
            .is_some_and(|t| t.contains_key("secret") || t.contains_key("scopes"));
        if scoped {
            ScopedToken::deserialize(value)
                .map(RawToken::Scoped)
                .map_err(|e| D::Error::custom(e.message()))
        } else {
            SecretSource::deserialize(value)
                .map(RawToken::Any)
                .map_err(|e| {
                    D::Error::custom(format!(
                        "{} (or {{ secret = ..., scopes = [\"ingest\", \"admin\"] }})",
                        e.message()
                    ))
                })
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScopedToken {
    pub(super) secret: SecretSource,
    pub(super) scopes: Vec<Scope>,
    /// What the audit log calls the token's actions; `token-<n>` (its place in the list, from
    /// 1) when absent.
    #[serde(default)]
    pub(super) name: Option<String>,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `POST /v1/events`.
    Ingest,
    /// The admin API: deliveries and subscriptions.
    Admin,
}

/// A bearer token of the API and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub secret: Secret,
    pub scopes: Vec<Scope>,
    /// Its `name`, or `token-<n>`: the actor the audit log names for what it does.
    pub name: String,
}

impl ApiToken {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}
