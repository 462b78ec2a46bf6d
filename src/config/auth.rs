//! The `[auth]` table: how clients prove who they are and what each may
//! pull. Validated here (files readable, keys and durations in range,
//! client certificates only with `[tls]`); the htpasswd file's entries and
//! the patterns are parsed by [`crate::auth`], which owns their meaning.
//! The token key is a [`Secret`]-like value that never reaches a log line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use super::{ConfigError, certificates, duration, invalid, read_file, resolve};

const DEFAULT_TOKEN_TTL: &str = "5m";
/// Shortest and longest token lifetimes accepted.
const TOKEN_TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(10), Duration::from_secs(24 * 3600));
/// Shortest token key accepted, in bytes.
const MIN_TOKEN_KEY: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    htpasswd: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    #[serde(default)]
    anonymous: Vec<String>,
    #[serde(default)]
    access: Vec<RawAccess>,
    token_key: Option<PathBuf>,
    token_ttl: Option<String>,
    realm: Option<String>,
    health_on_listen: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    users: Vec<String>,
    images: Vec<String>,
}

/// One `[[auth.access]]` rule, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    pub users: Vec<String>,
    pub images: Vec<String>,
}

/// The key tokens are signed with.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl TokenKey {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The validated `[auth]` table.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub htpasswd: Option<PathBuf>,
    /// Client certificates chaining to these are accepted (needs `[tls]`).
    pub client_ca: Vec<CertificateDer<'static>>,
    pub anonymous: Vec<String>,
    pub access: Vec<AccessConfig>,
    /// `None`: a key generated at start.
    pub token_key: Option<TokenKey>,
    pub token_ttl: Duration,
    /// The token endpoint's URL as clients reach it; by default from the
    /// request's `Host` (`http(s)://HOST/token`).
    pub realm: Option<String>,
    /// Whether `/healthz`, `/readyz` and `/metrics` answer on `listen`
    /// (they always do on `admin_listen`).
    pub health_on_listen: bool,
}

impl RawAuth {
    pub(super) fn validate(self, base: &Path, tls: bool) -> Result<AuthConfig, ConfigError> {
        let htpasswd = self.htpasswd.map(|p| resolve(base, &p));
        if let Some(p) = &htpasswd {
            read_file("auth.htpasswd", p.clone())?;
        }
        let client_ca = match self.client_ca {
            None => Vec::new(),
            Some(_) if !tls => {
                return Err(invalid(
                    "auth.client_ca",
                    "client certificates need [tls]: add cert and key, or remove client_ca",
                ));
            }
            Some(p) => certificates("auth.client_ca", resolve(base, &p))?,
        };
        if htpasswd.is_none() && client_ca.is_empty() && self.anonymous.is_empty() {
            return Err(invalid(
                "auth",
                "name htpasswd, client_ca or anonymous: otherwise no client can pull anything",
            ));
        }
        if htpasswd.is_none() && client_ca.is_empty() && !self.access.is_empty() {
            return Err(invalid(
                "auth.access",
                "access rules need a way to sign in: add htpasswd or client_ca",
            ));
        }
        let mut access = Vec::with_capacity(self.access.len());
        for (i, r) in self.access.into_iter().enumerate() {
            if r.users.is_empty() || r.users.iter().any(String::is_empty) {
                return Err(invalid(
                    format!("auth.access[{i}].users"),
                    "list at least one user pattern, none empty",
                ));
            }
            if r.images.is_empty() {
                return Err(invalid(
                    format!("auth.access[{i}].images"),
                    "list at least one image pattern",
                ));
            }
            access.push(AccessConfig {
                users: r.users,
                images: r.images,
            });
        }
        let token_key = match self.token_key {
            None => None,
            Some(p) => {
                let (path, bytes) = read_file("auth.token_key", resolve(base, &p))?;
                let key = bytes.trim_ascii().to_vec();
                if key.len() < MIN_TOKEN_KEY {
                    return Err(invalid(
                        "auth.token_key",
                        format!(
                            "{} holds {} bytes; use at least {MIN_TOKEN_KEY} (openssl rand -hex 32 > FILE)",
                            path.display(),
                            key.len()
                        ),
                    ));
                }
                Some(TokenKey(key))
            }
        };
        let token_ttl = duration(
            "auth.token_ttl",
            self.token_ttl.as_deref(),
            DEFAULT_TOKEN_TTL,
        )?;
        if token_ttl < TOKEN_TTL_RANGE.0 || token_ttl > TOKEN_TTL_RANGE.1 {
            return Err(invalid("auth.token_ttl", "must be between 10s and 24h"));
        }
        if let Some(r) = &self.realm {
            let ok = (r.starts_with("http://") || r.starts_with("https://"))
                && r.len() <= 1024
                && r.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
            if !ok {
                return Err(invalid(
                    "auth.realm",
                    "must be an http:// or https:// URL without quotes or spaces",
                ));
            }
        }
        Ok(AuthConfig {
            htpasswd,
            client_ca,
            anonymous: self.anonymous,
            access,
            token_key,
            token_ttl,
            realm: self.realm,
            health_on_listen: self.health_on_listen.unwrap_or(true),
        })
    }
}
