//! The name grammar of the OCI Distribution Spec: repository names, tags,
//! manifest references and registry host names.
//!
//! Every name a client or a config file supplies passes through here before it
//! is used to build a filesystem path, an upstream URL or a response header.
//! The parsers are hand-written, anchored by construction (they consume the
//! whole input) and bounded in length. This module must not know about
//! upstreams or routing: Docker Hub's `library/` rule lives in the router.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted (distribution's limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag accepted (the spec's limit: 128 characters).
pub const MAX_TAG_LEN: usize = 128;
/// Longest registry host name accepted, port included.
pub const MAX_HOST_LEN: usize = 255;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name is empty")]
    EmptyName,
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error(
        "repository name component {0:?} is invalid: use lowercase letters and digits, separated by '.', '_', '__' or '-'"
    )]
    BadComponent(String),
    #[error(
        "tag is invalid: it must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}} (at most {MAX_TAG_LEN} characters)"
    )]
    BadTag,
    #[error("reference is neither a valid tag nor a valid digest")]
    BadReference(#[source] DigestError),
    #[error("registry name is invalid: expected host[:port] with letters, digits, '-' and '.'")]
    BadHost,
}

/// A repository name such as `library/alpine`, validated against the spec's
/// grammar: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(Box<str>);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A new name with `prefix/` in front (used for Docker Hub's `library/`).
    pub fn with_prefix(&self, prefix: &str) -> Result<RepoName, NameError> {
        format!("{prefix}/{}", self.0).parse()
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        let sep = b[i];
        while i < b.len() && b[i] == sep {
            i += 1;
        }
        let run = i - start;
        let ok = match sep {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::EmptyName);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::NameTooLong);
        }
        for c in s.split('/') {
            if !valid_component(c) {
                let shown: String = c.chars().take(64).collect();
                return Err(NameError::BadComponent(shown));
            }
        }
        Ok(RepoName(s.into()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A tag such as `v1.2.3`: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Box<str>);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b[1.min(b.len())..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || b.len() > MAX_TAG_LEN {
            return Err(NameError::BadTag);
        }
        Ok(Tag(s.into()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The `<reference>` of a manifest request: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Tags cannot contain ':', digests always do.
        if s.contains(':') {
            s.parse()
                .map(Reference::Digest)
                .map_err(NameError::BadReference)
        } else {
            s.parse().map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// A registry host name with an optional port, as containerd sends in `ns=`
/// and as upstreams are named: `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
/// Stored lowercase: host names are case-insensitive.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryHost(Box<str>);

impl RegistryHost {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

impl FromStr for RegistryHost {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_HOST_LEN {
            return Err(NameError::BadHost);
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if let Some(p) = port {
            let ok = !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
            if !ok {
                return Err(NameError::BadHost);
            }
        }
        if !host.split('.').all(valid_domain_component) {
            return Err(NameError::BadHost);
        }
        Ok(RegistryHost(s.to_ascii_lowercase().into()))
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_spec_grammar() {
        for ok in [
            "alpine",
            "library/alpine",
            "a/b/c/d",
            "my-app",
            "my--app",
            "my_app",
            "my__app",
            "my.app",
            "0",
            "a1.b2_c3__d4-e5",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "refused {ok:?}");
        }
        for bad in [
            "", "Alpine", "/alpine", "alpine/", "a//b", "..", "a/../b", "a/./b", ".hidden", "a..b",
            "a___b", "a-", "-a", "a b", "a\nb", "a%2fb", "a:b", "a\\b",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "accepted {bad:?}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(long.parse::<RepoName>(), Err(NameError::NameTooLong));
        assert!("a".repeat(MAX_NAME_LEN).parse::<RepoName>().is_ok());
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", "sha256-abc.sig"] {
            assert!(ok.parse::<Tag>().is_ok(), "refused {ok:?}");
        }
        for bad in [
            "",
            ".x",
            "-x",
            "a/b",
            "a:b",
            "a b",
            "a\r\nX-Injected: 1",
            "..",
        ] {
            assert!(bad.parse::<Tag>().is_err(), "accepted {bad:?}");
        }
        assert!("t".repeat(MAX_TAG_LEN).parse::<Tag>().is_ok());
        assert!("t".repeat(MAX_TAG_LEN + 1).parse::<Tag>().is_err());
    }

    #[test]
    fn references_are_tags_or_digests() {
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!(
            "sha256:nothex".parse::<Reference>(),
            Err(NameError::BadReference(_))
        ));
    }

    #[test]
    fn registry_hosts() {
        for ok in [
            "docker.io",
            "ghcr.io",
            "127.0.0.1:5000",
            "localhost",
            "Quay.IO",
            "a-b.example.com:443",
        ] {
            assert!(ok.parse::<RegistryHost>().is_ok(), "refused {ok:?}");
        }
        assert_eq!(
            "Quay.IO".parse::<RegistryHost>().unwrap().as_str(),
            "quay.io"
        );
        for bad in [
            "",
            "docker.io/library",
            "-a.io",
            "a-.io",
            "a..io",
            "a.io:",
            "a.io:0",
            "a.io:65536",
            "a.io:12x",
            "a.io\r\nX: y",
            "../etc",
            "a io",
        ] {
            assert!(bad.parse::<RegistryHost>().is_err(), "accepted {bad:?}");
        }
    }
}
