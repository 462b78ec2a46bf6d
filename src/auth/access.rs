//! Who may pull what: the `anonymous` patterns and the `[[auth.access]]`
//! rules, matched against an identity and a normalized reference.
//!
//! The rule for an identity is the first whose `users` match it, in file
//! order; its `images` decide. An identity no rule names may pull only what
//! `anonymous` allows (so does everyone else). Image patterns are the
//! policy's ([`ImagePattern`]: globs over normalized references, aliases
//! resolved); user patterns are globs over the whole identity (`ci-*`,
//! `cn:node-*`). This module must not authenticate anyone.

use globset::{GlobBuilder, GlobMatcher};

use crate::config::{AccessConfig, UpstreamConfig};
use crate::policy::pattern::{ImagePattern, PatternError, canonical_in};

/// An access rule or anonymous pattern that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{key}: invalid image pattern")]
    Image {
        key: String,
        #[source]
        source: PatternError,
    },
    #[error("{key}: invalid user pattern {pattern:?}")]
    User {
        key: String,
        pattern: String,
        #[source]
        source: globset::Error,
    },
}

struct Rule {
    users: Vec<GlobMatcher>,
    images: Vec<ImagePattern>,
}

/// The compiled rules.
pub struct Access {
    anonymous: Vec<ImagePattern>,
    rules: Vec<Rule>,
}

fn images(
    key: &str,
    patterns: &[String],
    upstreams: &[UpstreamConfig],
) -> Result<Vec<ImagePattern>, AccessError> {
    let canonical = canonical_in(upstreams);
    patterns
        .iter()
        .map(|p| {
            ImagePattern::parse(p, &canonical).map_err(|source| AccessError::Image {
                key: key.to_owned(),
                source,
            })
        })
        .collect()
}

impl Access {
    pub fn new(
        anonymous: &[String],
        rules: &[AccessConfig],
        upstreams: &[UpstreamConfig],
    ) -> Result<Access, AccessError> {
        let anonymous = images("auth.anonymous", anonymous, upstreams)?;
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let key = format!("auth.access[{i}]");
                let users = r
                    .users
                    .iter()
                    .map(|u| {
                        GlobBuilder::new(u)
                            .literal_separator(false)
                            .backslash_escape(false)
                            .build()
                            .map(|g| g.compile_matcher())
                            .map_err(|source| AccessError::User {
                                key: format!("{key}.users"),
                                pattern: u.clone(),
                                source,
                            })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Rule {
                    users,
                    images: images(&format!("{key}.images"), &r.images, upstreams)?,
                })
            })
            .collect::<Result<_, AccessError>>()?;
        Ok(Access { anonymous, rules })
    }

    /// May anyone, signed in or not, pull `reference`?
    pub fn anonymous(&self, reference: &str) -> bool {
        self.anonymous.iter().any(|p| p.matches(reference))
    }

    /// May `identity` (`None`: nobody signed in) pull `reference`?
    pub fn allows(&self, identity: Option<&str>, reference: &str) -> bool {
        if self.anonymous(reference) {
            return true;
        }
        let Some(identity) = identity else {
            return false;
        };
        self.rules
            .iter()
            .find(|r| r.users.iter().any(|u| u.is_match(identity)))
            .is_some_and(|r| r.images.iter().any(|p| p.matches(reference)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams() -> Vec<UpstreamConfig> {
        let text = r#"
            [[upstream]]
            name = "docker.io"
            url = "https://registry-1.docker.io"
            aliases = ["index.docker.io"]
            [[upstream]]
            name = "ghcr.io"
            url = "https://ghcr.io"
        "#;
        crate::config::Config::parse(text, "test", std::path::Path::new("/"))
            .unwrap()
            .upstreams
    }

    fn rule(users: &[&str], images: &[&str]) -> AccessConfig {
        AccessConfig {
            users: users.iter().map(|s| s.to_string()).collect(),
            images: images.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_first_rule_naming_a_user_decides() {
        let a = Access::new(
            &[],
            &[
                rule(&["ci-deploy"], &["ghcr.io/acme/**"]),
                rule(&["ci-*"], &["ghcr.io/acme/public/**"]),
                rule(&["cn:node-*"], &["docker.io/library/*"]),
            ],
            &upstreams(),
        )
        .unwrap();
        assert!(a.allows(Some("ci-deploy"), "ghcr.io/acme/private/app"));
        assert!(a.allows(Some("ci-build"), "ghcr.io/acme/public/app"));
        // ci-build's rule is the second: the first does not name it.
        assert!(!a.allows(Some("ci-build"), "ghcr.io/acme/private/app"));
        assert!(a.allows(Some("cn:node-17"), "docker.io/library/alpine"));
        assert!(!a.allows(Some("cn:node-17"), "docker.io/acme/alpine"));
        // A user no rule names, and nobody at all, get nothing.
        assert!(!a.allows(Some("mallory"), "ghcr.io/acme/public/app"));
        assert!(!a.allows(None, "ghcr.io/acme/public/app"));
        // Globs cover the whole identity.
        assert!(!a.allows(Some("xci-deploy"), "ghcr.io/acme/public/app"));
        assert!(!a.allows(Some("node-1"), "docker.io/library/alpine"));
    }

    #[test]
    fn anonymous_patterns_are_open_to_everyone_and_use_normalized_names() {
        let a = Access::new(
            &["index.docker.io/alpine".into()],
            &[rule(&["ci-*"], &["ghcr.io/**"])],
            &upstreams(),
        )
        .unwrap();
        // The alias and the library/ rule are resolved as the policy does.
        assert!(a.allows(None, "docker.io/library/alpine"));
        assert!(a.allows(Some("ci-x"), "docker.io/library/alpine"));
        assert!(a.allows(Some("mallory"), "docker.io/library/alpine"));
        assert!(!a.allows(None, "docker.io/library/alpine/x"));
        assert!(!a.allows(None, "ghcr.io/acme/app"));
    }

    #[test]
    fn bad_patterns_name_their_key() {
        let e = Access::new(&["alpine".into()], &[], &upstreams())
            .err()
            .unwrap();
        assert!(e.to_string().contains("auth.anonymous"), "{e}");
        let e = Access::new(&[], &[rule(&["ci-[x"], &["ghcr.io/**"])], &upstreams())
            .err()
            .unwrap();
        assert!(e.to_string().contains("auth.access[0].users"), "{e}");
    }
}
