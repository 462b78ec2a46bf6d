//! `[store]`: where object bytes live. `backend = "local"` (the default)
//! keeps them under `data_dir`; `backend = "s3"` keeps them in an
//! S3-compatible bucket that replicas share, with an optional local copy.
//! The secret key comes from `secret_access_key_file`, or with the key id
//! from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`; it is never echoed.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, certificates, credentials, duration, invalid, resolve, size};
use crate::store::s3::BucketSettings;
use crate::store::s3::client::S3Settings;

const DEFAULT_TIMEOUT: &str = "30s";
const DEFAULT_ACCESS_INTERVAL: &str = "1h";
/// Longest key prefix.
const MAX_PREFIX: usize = 512;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    backend: Option<String>,
    endpoint: Option<String>,
    bucket: Option<String>,
    region: Option<String>,
    prefix: Option<String>,
    access_key_id: Option<String>,
    secret_access_key_file: Option<PathBuf>,
    path_style: Option<bool>,
    local_cache: Option<String>,
    ca_file: Option<PathBuf>,
    timeout: Option<String>,
    access_interval: Option<String>,
}

/// Where objects are stored.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Files under `data_dir`.
    Local,
    /// A shared bucket.
    S3(Box<BucketSettings>),
}

/// An environment variable, if set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(key: &str, value: Option<String>) -> Result<String, ConfigError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(format!("store.{key}"), "is required with backend = \"s3\""))
}

fn endpoint(value: &str) -> Result<url::Url, ConfigError> {
    let key = "store.endpoint";
    let shown = if value.contains('@') {
        "<URL with credentials>"
    } else {
        value
    };
    let url = url::Url::parse(value).map_err(|_| {
        invalid(
            key,
            format!("{shown:?} is not a URL: write e.g. \"http://garage:3900\""),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            key,
            format!("{shown:?}: the scheme must be http:// or https://"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            key,
            "credentials do not belong in the URL: use access_key_id and secret_access_key_file",
        ));
    }
    if url.host_str().is_none() || !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(invalid(
            key,
            format!("{shown:?}: give the service's base URL only, without a path or query"),
        ));
    }
    Ok(url)
}

/// S3 bucket naming rules: 3–63 of `a-z0-9.-`, starting and ending with a
/// letter or digit.
fn bucket(name: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "store.bucket",
            format!("{name:?} is not a bucket name: 3 to 63 of a-z, 0-9, '.' and '-'"),
        ))
    }
}

fn prefix(value: &str) -> Result<String, ConfigError> {
    let ok = value.len() <= MAX_PREFIX
        && !value.starts_with('/')
        && (value.is_empty() || value.ends_with('/'))
        && !value.split('/').any(|s| s == "." || s == "..")
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            "store.prefix",
            format!(
                "{value:?}: use letters, digits, '-', '_', '.' and '/', ending in '/' (e.g. \"cache/\")"
            ),
        ))
    }
}

impl RawStore {
    fn set_keys(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let mut note = |name, is: bool| {
            if is {
                set.push(name)
            }
        };
        note("endpoint", self.endpoint.is_some());
        note("bucket", self.bucket.is_some());
        note("region", self.region.is_some());
        note("prefix", self.prefix.is_some());
        note("access_key_id", self.access_key_id.is_some());
        note(
            "secret_access_key_file",
            self.secret_access_key_file.is_some(),
        );
        note("path_style", self.path_style.is_some());
        note("local_cache", self.local_cache.is_some());
        note("ca_file", self.ca_file.is_some());
        note("timeout", self.timeout.is_some());
        note("access_interval", self.access_interval.is_some());
        set
    }

    pub(super) fn validate(self, base: &Path) -> Result<StoreConfig, ConfigError> {
        match self.backend.as_deref().unwrap_or("local") {
            "local" => match self.set_keys().first() {
                Some(k) => Err(invalid(
                    format!("store.{k}"),
                    "is only for backend = \"s3\"",
                )),
                None => Ok(StoreConfig::Local),
            },
            "s3" => self.validate_s3(base).map(|s| StoreConfig::S3(Box::new(s))),
            other => Err(invalid(
                "store.backend",
                format!("{other:?}: use \"local\" or \"s3\""),
            )),
        }
    }

    fn validate_s3(self, base: &Path) -> Result<BucketSettings, ConfigError> {
        let endpoint = endpoint(&required("endpoint", self.endpoint)?)?;
        let bucket_name = required("bucket", self.bucket)?;
        bucket(&bucket_name)?;
        let region = required("region", self.region)?;
        if region.len() > 64
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "store.region",
                format!("{region:?} is not a region name"),
            ));
        }
        let prefix = prefix(self.prefix.as_deref().unwrap_or(""))?;
        let (access_key_id, secret_access_key) = match self.secret_access_key_file {
            Some(file) => {
                let id = self.access_key_id.or_else(|| env("AWS_ACCESS_KEY_ID"));
                let c = credentials(
                    ("store.access_key_id", id),
                    ("store.secret_access_key_file", Some(file)),
                    base,
                )?
                .ok_or_else(|| invalid("store.secret_access_key_file", "is required"))?;
                (c.username, c.password.expose().to_owned())
            }
            None => {
                let id = self
                    .access_key_id
                    .or_else(|| env("AWS_ACCESS_KEY_ID"))
                    .ok_or_else(|| {
                        invalid(
                            "store.access_key_id",
                            "is required (or AWS_ACCESS_KEY_ID in the environment)",
                        )
                    })?;
                let secret = env("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
                    invalid(
                        "store.secret_access_key_file",
                        "is required (or AWS_SECRET_ACCESS_KEY in the environment)",
                    )
                })?;
                (id, secret)
            }
        };
        if access_key_id
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(invalid(
                "store.access_key_id",
                "must not hold spaces or control characters",
            ));
        }
        let ca_certs = match self.ca_file {
            Some(f) => certificates("store.ca_file", resolve(base, &f))?,
            None => Vec::new(),
        };
        let timeout = duration("store.timeout", self.timeout.as_deref(), DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(invalid("store.timeout", "must be greater than zero"));
        }
        let access_interval = duration(
            "store.access_interval",
            self.access_interval.as_deref(),
            DEFAULT_ACCESS_INTERVAL,
        )?;
        if access_interval.is_zero() {
            return Err(invalid(
                "store.access_interval",
                "must be greater than zero",
            ));
        }
        Ok(BucketSettings {
            s3: S3Settings {
                endpoint,
                bucket: bucket_name,
                region,
                path_style: self.path_style.unwrap_or(true),
                access_key_id,
                secret_access_key,
                ca_certs,
                timeout,
            },
            prefix,
            local_cache: size("store.local_cache", self.local_cache.as_deref(), "0")?,
            access_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(text: &str, base: &Path) -> Result<StoreConfig, ConfigError> {
        let raw: RawStore = toml::from_str(text).unwrap();
        raw.validate(base)
    }

    fn message(r: Result<StoreConfig, ConfigError>) -> String {
        crate::error::chain(&r.unwrap_err())
    }

    #[test]
    fn the_contract_parses_and_hides_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "s3cr3t-value\n").unwrap();
        let c = parse(
            r#"
            backend = "s3"
            endpoint = "http://garage.storage.svc:3900"
            bucket = "portcullis"
            region = "garage"
            prefix = "cache/"
            access_key_id = "GK0123"
            secret_access_key_file = "secret"
            local_cache = "20GiB"
            "#,
            dir.path(),
        )
        .unwrap();
        let StoreConfig::S3(s) = c else { panic!() };
        assert_eq!(s.s3.secret_access_key, "s3cr3t-value");
        assert_eq!(s.prefix, "cache/");
        assert_eq!(s.local_cache, 20 << 30);
        assert!(s.s3.path_style);
        assert_eq!(s.access_interval, Duration::from_secs(3600));
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn local_is_the_default_and_takes_no_s3_keys() {
        let dir = Path::new("/nonexistent");
        assert!(matches!(parse("", dir).unwrap(), StoreConfig::Local));
        let m = message(parse("bucket = \"b\"", dir));
        assert!(m.starts_with("store.bucket: is only for"), "{m}");
        let m = message(parse("backend = \"gcs\"", dir));
        assert!(m.starts_with("store.backend:"), "{m}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "x\n").unwrap();
        let base = "backend = \"s3\"\naccess_key_id = \"GK\"\nsecret_access_key_file = \"s\"\n";
        for (extra, key) in [
            ("bucket = \"b\"\nregion = \"r\"", "store.endpoint"),
            (
                "endpoint = \"ftp://x\"\nbucket = \"bkt\"\nregion = \"r\"",
                "store.endpoint",
            ),
            (
                "endpoint = \"http://u:p@x\"\nbucket = \"bkt\"\nregion = \"r\"",
                "store.endpoint",
            ),
            (
                "endpoint = \"http://x/path\"\nbucket = \"bkt\"\nregion = \"r\"",
                "store.endpoint",
            ),
            (
                "endpoint = \"http://x\"\nbucket = \"Bad_Name\"\nregion = \"r\"",
                "store.bucket",
            ),
            ("endpoint = \"http://x\"\nbucket = \"bkt\"", "store.region"),
            (
                "endpoint = \"http://x\"\nbucket = \"bkt\"\nregion = \"r\"\nprefix = \"/abs/\"",
                "store.prefix",
            ),
            (
                "endpoint = \"http://x\"\nbucket = \"bkt\"\nregion = \"r\"\nprefix = \"no-slash\"",
                "store.prefix",
            ),
            (
                "endpoint = \"http://x\"\nbucket = \"bkt\"\nregion = \"r\"\nprefix = \"a/../\"",
                "store.prefix",
            ),
            (
                "endpoint = \"http://x\"\nbucket = \"bkt\"\nregion = \"r\"\nlocal_cache = \"lots\"",
                "store.local_cache",
            ),
            (
                "endpoint = \"http://x\"\nbucket = \"bkt\"\nregion = \"r\"\ntimeout = \"0s\"",
                "store.timeout",
            ),
        ] {
            let m = message(parse(&format!("{base}{extra}"), dir.path()));
            assert!(m.starts_with(key), "{extra}: {m}");
            assert!(!m.contains("u:p"), "{m}");
        }
        let m = message(parse(
            "backend = \"s3\"\nendpoint = \"http://x\"\nbucket = \"bkt\"\nregion = \"r\"\naccess_key_id = \"GK\"\nsecret_access_key_file = \"missing\"",
            dir.path(),
        ));
        assert!(
            m.starts_with("store.secret_access_key_file: cannot read"),
            "{m}"
        );
    }
}
