//! The `[[upstream]]` tables and the transport settings they validate into
//! ([`UpstreamConfig`]): URL, credentials (read from `password_file`, never
//! printed), CA files and timeouts. Also the same settings for servers that
//! are not registries (Notary). This module must not connect anywhere.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use super::{
    ConfigError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MIN_RATE, DEFAULT_MIN_RATE_WINDOW,
    DEFAULT_READ_TIMEOUT, certificates, duration, invalid, read_file, resolve, size,
};
use crate::reference::RegistryHost;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    name: String,
    url: String,
    #[serde(default)]
    default: bool,
    #[serde(default)]
    aliases: Vec<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    min_rate: Option<String>,
    min_rate_window: Option<String>,
}

/// One upstream registry.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The registry name clients use (`ns=` value or first path segment).
    pub name: RegistryHost,
    pub aliases: Vec<RegistryHost>,
    /// Base URL: scheme and authority only.
    pub url: http::Uri,
    pub default: bool,
    pub credentials: Option<Credentials>,
    /// Extra trust anchors (DER) besides the webpki roots.
    pub ca_certs: Vec<CertificateDer<'static>>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Bytes per second an upstream body must move, averaged over
    /// `min_rate_window`, or the transfer fails (0: no floor).
    pub min_rate: u64,
    pub min_rate_window: Duration,
}

impl UpstreamConfig {
    /// Docker Hub applies the `library/` rule to one-component names.
    pub fn is_docker_hub(&self) -> bool {
        std::iter::once(&self.name)
            .chain(&self.aliases)
            .any(|n| n.as_str() == "docker.io")
    }
}

/// Credentials for one upstream. Never printed.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// A secret string whose `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself: use only to build an outgoing header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Credentials from a user name and a file holding the password on one
/// line, both or neither; each given with the key that names it in errors.
/// Relative paths resolve against `base`.
pub fn credentials(
    (user_key, username): (&str, Option<String>),
    (file_key, password_file): (&str, Option<PathBuf>),
    base: &Path,
) -> Result<Option<Credentials>, ConfigError> {
    match (username, password_file) {
        (None, None) => Ok(None),
        (Some(username), Some(file)) => {
            if username.is_empty()
                || username.contains(':')
                || username.chars().any(char::is_control)
            {
                return Err(invalid(
                    user_key,
                    "must be non-empty, without ':' or control characters",
                ));
            }
            let (path, bytes) = read_file(file_key, resolve(base, &file))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| invalid(file_key, format!("{} is not UTF-8", path.display())))?;
            let password = text.trim_end_matches(['\r', '\n']).to_owned();
            if password.is_empty() || password.contains(['\r', '\n']) {
                return Err(invalid(
                    file_key,
                    format!("{} must hold the password on one line", path.display()),
                ));
            }
            Ok(Some(Credentials {
                username,
                password: Secret::new(password),
            }))
        }
        // "is required with username": the other key's own name.
        (Some(_), None) => Err(invalid(
            file_key,
            format!("is required with {}", field(user_key)),
        )),
        (None, Some(_)) => Err(invalid(
            user_key,
            format!("is required with {}", field(file_key)),
        )),
    }
}

/// The last component of a key (`upstream[0].username` → `username`).
fn field(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

impl RawUpstream {
    pub(super) fn validate(self, key: &str, base: &Path) -> Result<UpstreamConfig, ConfigError> {
        let k = |field: &str| format!("{key}.{field}");
        let name: RegistryHost = self.name.parse().map_err(|source| ConfigError::Name {
            key: k("name"),
            source,
        })?;
        let aliases = self
            .aliases
            .iter()
            .map(|a| a.parse::<RegistryHost>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ConfigError::Name {
                key: k("aliases"),
                source,
            })?;
        let url = parse_upstream_url(&k("url"), &self.url)?;
        let credentials = credentials(
            (&k("username"), self.username),
            (&k("password_file"), self.password_file),
            base,
        )?;
        let ca_certs = match self.ca_file {
            Some(file) => certificates(&k("ca_file"), resolve(base, &file))?,
            None => Vec::new(),
        };
        let connect_timeout = duration(
            &k("connect_timeout"),
            self.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        )?;
        let read_timeout = duration(
            &k("read_timeout"),
            self.read_timeout.as_deref(),
            DEFAULT_READ_TIMEOUT,
        )?;
        let min_rate = size(&k("min_rate"), self.min_rate.as_deref(), DEFAULT_MIN_RATE)?;
        let min_rate_window = duration(
            &k("min_rate_window"),
            self.min_rate_window.as_deref(),
            DEFAULT_MIN_RATE_WINDOW,
        )?;
        for (field, d) in [
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("min_rate_window", min_rate_window),
        ] {
            if d.is_zero() {
                return Err(invalid(k(field), "must be greater than zero"));
            }
        }
        Ok(UpstreamConfig {
            name,
            aliases,
            url,
            default: self.default,
            credentials,
            ca_certs,
            connect_timeout,
            read_timeout,
            min_rate,
            min_rate_window,
        })
    }
}

/// The transport settings of a server that is not a registry (a Notary
/// server, named in the policy), validated as an upstream's are: URL, TLS
/// trust (`ca_file`), credentials, default timeouts. It is named by its
/// URL's host and port in logs and metrics.
pub fn server_transport(
    key: &str,
    url: String,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    base: &Path,
) -> Result<UpstreamConfig, ConfigError> {
    let parsed = parse_upstream_url(&format!("{key}.url"), &url)?;
    let name = parsed
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    RawUpstream {
        name,
        url,
        default: false,
        aliases: Vec::new(),
        username,
        password_file,
        ca_file,
        connect_timeout: None,
        read_timeout: None,
        min_rate: None,
        min_rate_window: None,
    }
    .validate(key, base)
}

fn parse_upstream_url(key: &str, value: &str) -> Result<http::Uri, ConfigError> {
    // A URL with user-info may carry a password: never echo it.
    let shown = if value.contains('@') {
        "<URL with credentials>"
    } else {
        value
    };
    let bad = |why: &str| invalid(key, format!("{shown:?}: {why}"));
    let uri: http::Uri = value
        .parse()
        .map_err(|_| bad("not a URL; write e.g. \"https://registry-1.docker.io\""))?;
    match uri.scheme_str() {
        Some("https") | Some("http") => {}
        _ => {
            return Err(bad(
                "the scheme must be https:// (or http:// for a plain-text registry)",
            ));
        }
    }
    let authority = uri.authority().ok_or_else(|| bad("the URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "credentials do not belong in the URL: use username and password_file",
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad(
            "give the registry's base URL only, without a path or query",
        ));
    }
    http::Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("https"))
        .authority(authority.as_str())
        .path_and_query("/")
        .build()
        .map_err(|_| bad("not a URL"))
}
