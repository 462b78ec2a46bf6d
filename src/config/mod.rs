//! The configuration file: serde structs that mirror the TOML, validated into
//! typed values once, at start.
//!
//! Owns the key names (a contract with the docs and tests), defaults, and every
//! check that can be made before serving: unknown keys, bad sizes and
//! durations, unreadable files, duplicate upstream names. Errors name the key.
//! Relative paths are resolved against the directory of the config file.
//! Secrets read here are wrapped in [`Secret`] so they never reach a log line.
//! This module must not open sockets or the cache.

mod auth;
mod store;
pub mod units;
mod upstream;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::reference::NameError;
pub use auth::{AccessConfig, AuthConfig, TokenKey};
pub use store::StoreConfig;
use units::{UnitError, parse_duration, parse_size};
use upstream::RawUpstream;
pub use upstream::{Credentials, Secret, UpstreamConfig, credentials, server_transport};

/// The configuration `portcullis serve` uses when given no `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
const DEFAULT_DATA_DIR: &str = "portcullis-data";
const DEFAULT_MAX_SIZE: &str = "10GiB";
const DEFAULT_TAG_TTL: &str = "5m";
const DEFAULT_MANIFEST_MEMORY: &str = "64MiB";
const DEFAULT_CONNECT_TIMEOUT: &str = "10s";
const DEFAULT_READ_TIMEOUT: &str = "30s";
const DEFAULT_SHUTDOWN_GRACE: &str = "30s";
const DEFAULT_HEADER_READ_TIMEOUT: &str = "30s";
const DEFAULT_MAX_FILLS: usize = 64;
const DEFAULT_FILL_QUEUE: usize = 512;
const DEFAULT_SCRUB_RATE: &str = "8MiB";
const DEFAULT_MIN_RATE: &str = "16KiB";
const DEFAULT_MIN_RATE_WINDOW: &str = "30s";

/// What is wrong with a configuration. Every variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: invalid configuration")]
    Syntax {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    #[error("{key}: invalid value")]
    Unit {
        key: String,
        #[source]
        source: UnitError,
    },
    #[error("{key}: invalid name")]
    Name {
        key: String,
        #[source]
        source: NameError,
    },
    #[error("{key}: cannot read {path}")]
    File {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    admin_listen: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    offline: bool,
    log_format: Option<String>,
    shutdown_grace: Option<String>,
    header_read_timeout: Option<String>,
    max_connections: Option<usize>,
    policy: Option<PathBuf>,
    tls: Option<RawTls>,
    auth: Option<auth::RawAuth>,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    store: store::RawStore,
    #[serde(default, rename = "upstream")]
    upstreams: Vec<RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_size: Option<String>,
    tag_ttl: Option<String>,
    manifest_memory: Option<String>,
    max_fills: Option<usize>,
    fill_queue: Option<usize>,
    scrub_rate: Option<String>,
    #[serde(default)]
    verify_reads: bool,
}

// ---------------------------------------------------------------------------
// The validated configuration.

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub offline: bool,
    pub log_format: LogFormat,
    /// How long in-flight responses may run after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// How long a client has, from accept, to send a request's headers (and
    /// between requests on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// Client connections served at once on the main listener; `None`:
    /// three quarters of the process's file descriptor limit.
    pub max_connections: Option<usize>,
    /// The signature policy file; without one every image is served unchecked.
    pub policy: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    /// `None`: an open mirror (every client may pull everything).
    pub auth: Option<AuthConfig>,
    pub cache: CacheConfig,
    /// Where object bytes live (`[store]`).
    pub store: StoreConfig,
    pub upstreams: Vec<UpstreamConfig>,
}

/// Certificate chain and key for serving HTTPS.
pub struct TlsConfig {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsConfig {
    fn clone(&self) -> Self {
        TlsConfig {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("certificates", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Least-recently-used objects are evicted above this many bytes.
    pub max_size: u64,
    /// How long a tag -> digest answer is trusted before revalidation.
    pub tag_ttl: Duration,
    /// Bytes of recently served manifests kept in memory (0: none).
    pub manifest_memory: u64,
    /// Blob downloads from upstream at once.
    pub max_fills: usize,
    /// Blob downloads waiting for a slot, at most; beyond, 503.
    pub fill_queue: usize,
    /// Bytes per second the background scrub re-hashes (0: off).
    pub scrub_rate: u64,
    /// Re-hash cached blobs while serving them whole, holding back the last
    /// byte until they verify.
    pub verify_reads: bool,
}

impl Config {
    /// Read and validate a config file; relative paths resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), base)
    }

    /// The embedded default configuration; relative paths resolve against the
    /// working directory.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT, "embedded default config", Path::new(""))
    }

    /// Validate TOML text. `origin` names the source in error messages.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Syntax {
            origin: origin.to_owned(),
            source,
        })?;
        raw.validate(base)
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn read_file(key: &str, path: PathBuf) -> Result<(PathBuf, Vec<u8>), ConfigError> {
    match std::fs::read(&path) {
        Ok(bytes) => Ok((path, bytes)),
        Err(source) => Err(ConfigError::File {
            key: key.to_owned(),
            path,
            source,
        }),
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("{value:?} is not an address: write ip:port, e.g. \"127.0.0.1:5000\" or \"[::]:5000\""),
        )
    })
}

fn size(key: &str, value: Option<&str>, default: &str) -> Result<u64, ConfigError> {
    parse_size(value.unwrap_or(default)).map_err(|source| ConfigError::Unit {
        key: key.to_owned(),
        source,
    })
}

fn duration(key: &str, value: Option<&str>, default: &str) -> Result<Duration, ConfigError> {
    parse_duration(value.unwrap_or(default)).map_err(|source| ConfigError::Unit {
        key: key.to_owned(),
        source,
    })
}

fn certificates(key: &str, path: PathBuf) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let (path, pem) = read_file(key, path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        _ => Err(invalid(
            key,
            format!("{} holds no PEM certificate", path.display()),
        )),
    }
}

impl RawConfig {
    fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let listen = parse_addr("listen", self.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?;
        let admin_listen = self
            .admin_listen
            .as_deref()
            .map(|a| parse_addr("admin_listen", a))
            .transpose()?;
        if admin_listen.is_some_and(|a| a == listen && a.port() != 0) {
            return Err(invalid("admin_listen", "must differ from listen"));
        }
        let data_dir = resolve(
            base,
            self.data_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_DATA_DIR)),
        );
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let log_format = match self.log_format.as_deref() {
            None => LogFormat::Text,
            Some(s) => LogFormat::parse(s)
                .ok_or_else(|| invalid("log_format", format!("{s:?}: use \"text\" or \"json\"")))?,
        };
        let shutdown_grace = duration(
            "shutdown_grace",
            self.shutdown_grace.as_deref(),
            DEFAULT_SHUTDOWN_GRACE,
        )?;
        let header_read_timeout = duration(
            "header_read_timeout",
            self.header_read_timeout.as_deref(),
            DEFAULT_HEADER_READ_TIMEOUT,
        )?;
        if header_read_timeout.is_zero() {
            return Err(invalid("header_read_timeout", "must be greater than zero"));
        }
        if self.max_connections == Some(0) {
            return Err(invalid("max_connections", "must be greater than zero"));
        }
        let tls = self
            .tls
            .map(|t| -> Result<TlsConfig, ConfigError> {
                let cert_chain = certificates("tls.cert", resolve(base, &t.cert))?;
                let (path, pem) = read_file("tls.key", resolve(base, &t.key))?;
                let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
                    invalid(
                        "tls.key",
                        format!("{} holds no PEM private key", path.display()),
                    )
                })?;
                Ok(TlsConfig { cert_chain, key })
            })
            .transpose()?;
        let auth = self
            .auth
            .map(|a| a.validate(base, tls.is_some()))
            .transpose()?;
        let cache = CacheConfig {
            max_size: size(
                "cache.max_size",
                self.cache.max_size.as_deref(),
                DEFAULT_MAX_SIZE,
            )?,
            tag_ttl: duration(
                "cache.tag_ttl",
                self.cache.tag_ttl.as_deref(),
                DEFAULT_TAG_TTL,
            )?,
            manifest_memory: size(
                "cache.manifest_memory",
                self.cache.manifest_memory.as_deref(),
                DEFAULT_MANIFEST_MEMORY,
            )?,
            max_fills: self.cache.max_fills.unwrap_or(DEFAULT_MAX_FILLS),
            fill_queue: self.cache.fill_queue.unwrap_or(DEFAULT_FILL_QUEUE),
            scrub_rate: size(
                "cache.scrub_rate",
                self.cache.scrub_rate.as_deref(),
                DEFAULT_SCRUB_RATE,
            )?,
            verify_reads: self.cache.verify_reads,
        };
        if cache.max_size == 0 {
            return Err(invalid("cache.max_size", "must be greater than zero"));
        }
        if cache.max_fills == 0 {
            return Err(invalid("cache.max_fills", "must be greater than zero"));
        }
        let mut store = self.store.validate(base)?;
        if let StoreConfig::S3(s) = &mut store {
            // What this replica indexes bounds what it keeps locally.
            s.local_cache = s.local_cache.min(cache.max_size);
        }
        if self.upstreams.is_empty() {
            return Err(invalid(
                "upstream",
                "at least one [[upstream]] is required: it names the registries clients may pull from",
            ));
        }
        let mut upstreams = Vec::with_capacity(self.upstreams.len());
        let mut seen = HashSet::new();
        for (i, raw) in self.upstreams.into_iter().enumerate() {
            let up = raw.validate(&format!("upstream[{i}]"), base)?;
            for n in std::iter::once(&up.name).chain(&up.aliases) {
                if !seen.insert(n.clone()) {
                    return Err(invalid(
                        format!("upstream[{i}]"),
                        format!("registry name {n} is used by more than one upstream"),
                    ));
                }
            }
            upstreams.push(up);
        }
        if upstreams.iter().filter(|u| u.default).count() > 1 {
            return Err(invalid(
                "upstream.default",
                "only one upstream may be the default",
            ));
        }
        let policy = self.policy.as_deref().map(|p| resolve(base, p));
        if let Some(p) = &policy
            && !p.is_file()
        {
            return Err(invalid(
                "policy",
                format!("{} is not a readable file", p.display()),
            ));
        }
        Ok(Config {
            listen,
            admin_listen,
            data_dir,
            offline: self.offline,
            log_format,
            shutdown_grace,
            header_read_timeout,
            max_connections: self.max_connections,
            policy,
            tls,
            auth,
            cache,
            store,
            upstreams,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/nonexistent"))
    }

    fn message(err: &ConfigError) -> String {
        let mut s = err.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(err);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }

    const MINIMAL: &str = r#"
        [[upstream]]
        name = "docker.io"
        url = "https://registry-1.docker.io"
        default = true
    "#;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default().unwrap();
        assert_eq!(c.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(c.data_dir, Path::new("portcullis-data"));
        assert!(!c.offline);
        assert_eq!(c.upstreams.len(), 1);
        let hub = &c.upstreams[0];
        assert!(hub.default && hub.is_docker_hub());
        assert_eq!(hub.url.to_string(), "https://registry-1.docker.io/");
    }

    #[test]
    fn example_config_in_the_repository_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.upstreams.len(), 3);
        assert_eq!(c.cache.max_size, 50 << 30);
    }

    #[test]
    fn container_image_config_is_valid_and_serves_every_interface() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/container.toml");
        let c = Config::load(&path).unwrap();
        assert!(c.listen.ip().is_unspecified());
        assert_eq!(c.data_dir, Path::new("/var/lib/portcullis"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.shutdown_grace < Duration::from_secs(30));
    }

    #[test]
    fn defaults_fill_unset_keys() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.cache.max_size, 10 << 30);
        assert_eq!(c.cache.tag_ttl, Duration::from_secs(300));
        assert_eq!(c.data_dir, Path::new("/nonexistent/portcullis-data"));
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse(&format!("lisen = \"127.0.0.1:1\"\n{MINIMAL}")).unwrap_err();
        assert!(message(&e).contains("lisen"), "{}", message(&e));
        let e = parse(&format!("{MINIMAL}\nusername_file = \"x\"")).unwrap_err();
        assert!(message(&e).contains("username_file"), "{}", message(&e));
        let e = parse(&format!("[cache]\nmax_sise = \"1GiB\"\n{MINIMAL}")).unwrap_err();
        assert!(message(&e).contains("max_sise"), "{}", message(&e));
    }

    #[test]
    fn bad_units_name_their_key() {
        let e = parse(&format!("[cache]\nmax_size = \"50XB\"\n{MINIMAL}")).unwrap_err();
        assert!(
            message(&e).starts_with("cache.max_size:"),
            "{}",
            message(&e)
        );
        let e = parse(&format!("[cache]\ntag_ttl = \"5 minutes\"\n{MINIMAL}")).unwrap_err();
        assert!(message(&e).starts_with("cache.tag_ttl:"), "{}", message(&e));
        let e = parse(&format!("{MINIMAL}\nread_timeout = \"0s\"")).unwrap_err();
        assert!(
            message(&e).starts_with("upstream[0].read_timeout:"),
            "{}",
            message(&e)
        );
    }

    #[test]
    fn unreadable_files_name_their_key() {
        let e = parse(&format!(
            "{MINIMAL}\nusername = \"u\"\npassword_file = \"missing\""
        ))
        .unwrap_err();
        let m = message(&e);
        assert!(
            m.starts_with("upstream[0].password_file: cannot read /nonexistent/missing"),
            "{m}"
        );
        let e = parse(&format!("{MINIMAL}\nca_file = \"/nonexistent/ca.pem\"")).unwrap_err();
        assert!(
            message(&e).starts_with("upstream[0].ca_file:"),
            "{}",
            message(&e)
        );
        let e = parse(&format!(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{MINIMAL}"
        ))
        .unwrap_err();
        assert!(message(&e).starts_with("tls.cert:"), "{}", message(&e));
    }

    #[test]
    fn reads_password_file_and_hides_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let text = format!("{MINIMAL}\nusername = \"bot\"\npassword_file = \"pw\"");
        let c = Config::parse(&text, "t", dir.path()).unwrap();
        let creds = c.upstreams[0].credentials.as_ref().unwrap();
        assert_eq!(creds.password.expose(), "s3cret");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let e = parse(&format!("{MINIMAL}\nusername = \"bot\"")).unwrap_err();
        assert!(message(&e).starts_with("upstream[0].password_file: is required"));
    }

    #[test]
    fn upstream_rules() {
        let two_defaults = format!(
            "{MINIMAL}\n[[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\ndefault = true"
        );
        assert!(message(&parse(&two_defaults).unwrap_err()).contains("only one upstream"));
        let dup = format!(
            "{MINIMAL}\n[[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\naliases = [\"docker.io\"]"
        );
        assert!(message(&parse(&dup).unwrap_err()).contains("docker.io is used by more than one"));
        for (url, why) in [
            ("ftp://x", "scheme"),
            ("https://user:pw@x.io", "credentials"),
            ("https://x.io/v2/", "base URL"),
            ("x.io", "scheme"),
        ] {
            let text = format!("[[upstream]]\nname = \"x.io\"\nurl = \"{url}\"");
            let m = message(&parse(&text).unwrap_err());
            assert!(
                m.starts_with("upstream[0].url:") && m.contains(why),
                "{url}: {m}"
            );
            assert!(!m.contains("pw"), "secret echoed: {m}");
        }
        let bad_name = "[[upstream]]\nname = \"docker.io/library\"\nurl = \"https://x.io\"";
        assert!(message(&parse(bad_name).unwrap_err()).starts_with("upstream[0].name:"));
        assert!(message(&parse("listen = \"localhost\"").unwrap_err()).starts_with("listen:"));
        assert!(message(&parse("").unwrap_err()).starts_with("upstream:"));
    }
}
