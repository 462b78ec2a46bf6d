//! Image patterns (globs on normalized references) and identity matchers
//! (exact strings or regexes, always matched whole).
//!
//! A pattern is split on `/` like the reference it is matched against: a
//! segment `**` matches any number of whole segments (zero included), `*`
//! inside a segment matches any run of characters except `/`. The first
//! segment names a registry, so `trusted.io/*` can never match
//! `evil.io/trusted.io/x`. Patterns are lowercase, as normalized references
//! are (one with an uppercase letter could never match and is refused), and
//! are compiled by `globset` into linear-time matchers. A regex must compile
//! on its own before it is wrapped as `^(?:...)$`, so that no text can close
//! the wrapper's group and escape the anchors. This module must not know
//! about signatures or upstreams.

use std::fmt;

use regex::Regex;

/// Why a pattern or regex was refused.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("pattern {0:?} has an empty path segment")]
    EmptySegment(String),
    #[error("in pattern {0:?}, \"**\" must be a whole path segment")]
    DoubleStarInSegment(String),
    #[error(
        "pattern {0:?} must start with a registry name, e.g. \"docker.io/library/alpine\" or \"ghcr.io/acme/**\": patterns match normalized references"
    )]
    NoRegistry(String),
    #[error("pattern {0:?} holds characters that never appear in image references")]
    BadCharacters(String),
    #[error(
        "pattern {0:?} has uppercase letters: image references are normalized to lowercase, so it could never match; write {1:?}"
    )]
    Uppercase(String, String),
    #[error("invalid pattern")]
    Glob(#[source] globset::Error),
    #[error("invalid regular expression")]
    Regex(#[source] regex::Error),
}

/// The canonical registry name (and whether Docker Hub's `library/` rule
/// applies) for a registry name as written in a pattern, from the upstreams.
pub fn canonical_in(
    upstreams: &[crate::config::UpstreamConfig],
) -> impl Fn(&str) -> Option<(String, bool)> + '_ {
    move |name: &str| {
        upstreams.iter().find_map(|u| {
            let known = std::iter::once(&u.name)
                .chain(&u.aliases)
                .any(|n| n.as_str() == name);
            known.then(|| (u.name.to_string(), u.is_docker_hub()))
        })
    }
}

/// A glob over normalized image references.
#[derive(Clone)]
pub struct ImagePattern {
    text: String,
    matcher: globset::GlobSet,
}

impl PartialEq for ImagePattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for ImagePattern {}

fn looks_like_registry(segment: &str) -> bool {
    segment.contains('.') || segment.contains(':') || segment == "localhost"
}

impl ImagePattern {
    /// Parse a pattern. `canonical` maps a registry name as written (an alias
    /// such as `index.docker.io`) to the upstream's canonical name; `docker_hub`
    /// says whether that registry gets Docker Hub's `library/` rule.
    pub fn parse(
        text: &str,
        canonical: impl Fn(&str) -> Option<(String, bool)>,
    ) -> Result<ImagePattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let ok_chars = text.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b"._-/*:".contains(&b)
                || b.is_ascii_uppercase()
        });
        if !ok_chars {
            return Err(PatternError::BadCharacters(text.to_owned()));
        }
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(PatternError::Uppercase(
                text.to_owned(),
                text.to_ascii_lowercase(),
            ));
        }
        let mut parts: Vec<String> = text.split('/').map(str::to_owned).collect();
        if parts.iter().any(String::is_empty) {
            return Err(PatternError::EmptySegment(text.to_owned()));
        }
        let first = &parts[0];
        if !(first.contains('*') || looks_like_registry(first)) {
            return Err(PatternError::NoRegistry(text.to_owned()));
        }
        // Registry names may be aliases.
        if !first.contains('*') {
            let (name, hub) = canonical(first).unwrap_or((first.clone(), false));
            parts[0] = name;
            // Docker Hub's short names: docker.io/alpine is docker.io/library/alpine.
            if hub && parts.len() == 2 && !parts[1].contains('*') {
                parts.insert(1, "library".to_owned());
            }
        }
        if parts.iter().any(|p| p != "**" && p.contains("**")) {
            return Err(PatternError::DoubleStarInSegment(text.to_owned()));
        }
        // Consecutive `**` segments mean what one does.
        parts.dedup_by(|a, b| a == "**" && b == "**");
        let normalized = parts.join("/");
        let glob = |p: &str| {
            globset::GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(false)
                .build()
                .map_err(PatternError::Glob)
        };
        let mut set = globset::GlobSetBuilder::new();
        set.add(glob(&normalized)?);
        // globset's trailing `/**` needs one more segment; ours also
        // matches none (`ghcr.io/acme/**` matches `ghcr.io/acme`).
        if let Some(prefix) = normalized.strip_suffix("/**") {
            set.add(glob(prefix)?);
        }
        Ok(ImagePattern {
            text: normalized,
            matcher: set.build().map_err(PatternError::Glob)?,
        })
    }

    /// Does the normalized reference (`registry/repository`) match?
    pub fn matches(&self, reference: &str) -> bool {
        self.matcher.is_match(reference)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

/// An exact string or a regex that must match the whole value.
#[derive(Clone)]
pub enum Matcher {
    Exact(String),
    Regex { written: String, regex: Regex },
}

impl Matcher {
    /// Compile `written` anchored at both ends, whatever it already says. It
    /// must compile on its own first: `x)|(?:.*` would otherwise close the
    /// wrapper's group and match anything.
    pub fn regex(written: &str) -> Result<Matcher, PatternError> {
        Regex::new(written).map_err(PatternError::Regex)?;
        let regex = Regex::new(&format!("^(?:{written})$")).map_err(PatternError::Regex)?;
        Ok(Matcher::Regex {
            written: written.to_owned(),
            regex,
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Regex { regex, .. } => regex.is_match(value),
        }
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Exact(s) => write!(f, "{s:?}"),
            Matcher::Regex { written, .. } => write!(f, "/{written}/"),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(name: &str) -> Option<(String, bool)> {
        match name {
            "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
                Some(("docker.io".into(), true))
            }
            other => Some((other.into(), false)),
        }
    }

    fn pat(s: &str) -> ImagePattern {
        ImagePattern::parse(s, canonical).unwrap()
    }

    #[test]
    fn star_is_one_segment_and_double_star_any_number() {
        let p = pat("ghcr.io/acme/*");
        assert!(p.matches("ghcr.io/acme/app"));
        assert!(!p.matches("ghcr.io/acme/team/app"));
        assert!(!p.matches("ghcr.io/acme"));
        let p = pat("ghcr.io/acme/**");
        assert!(p.matches("ghcr.io/acme/app"));
        assert!(p.matches("ghcr.io/acme/team/app"));
        assert!(p.matches("ghcr.io/acme"));
        assert!(!p.matches("ghcr.io/acmecorp/app"));
        let p = pat("ghcr.io/**/tools/*");
        assert!(p.matches("ghcr.io/a/b/tools/x"));
        assert!(p.matches("ghcr.io/tools/x"));
        assert!(!p.matches("ghcr.io/a/tools/x/y"));
        let p = pat("ghcr.io/acme/app-*");
        assert!(p.matches("ghcr.io/acme/app-web"));
        assert!(p.matches("ghcr.io/acme/app-"));
        assert!(!p.matches("ghcr.io/acme/web-app"));
        let p = pat("*.example.com/**");
        assert!(p.matches("registry.example.com/x"));
        assert!(!p.matches("example.com/x"));
    }

    #[test]
    fn the_registry_segment_cannot_be_spoofed() {
        let p = pat("trusted.io/*");
        assert!(p.matches("trusted.io/x"));
        assert!(!p.matches("evil.io/trusted.io/x"));
        assert!(!p.matches("trusted.io.evil.io/x"));
        let p = pat("trusted.io/**");
        assert!(!p.matches("evil.io/trusted.io/x"));
    }

    #[test]
    fn docker_hub_names_normalize() {
        assert!(pat("docker.io/alpine").matches("docker.io/library/alpine"));
        assert!(pat("index.docker.io/library/alpine").matches("docker.io/library/alpine"));
        assert!(!pat("docker.io/*").matches("docker.io/library/alpine"));
    }

    #[test]
    fn refuses_patterns_that_cannot_mean_a_normalized_reference() {
        for bad in [
            "",
            "alpine",
            "library/alpine",
            "ghcr.io//x",
            "ghcr.io/a**",
            "ghcr.io/a b",
            "ghcr.io/a?",
            "ghcr.io/a[b]",
            "ghcr.io/{a,b}",
            "ghcr.io/a\\b",
        ] {
            assert!(
                ImagePattern::parse(bad, canonical).is_err(),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn regexes_are_anchored_whatever_the_user_wrote() {
        let m = Matcher::regex(r"https://github\.com/acme/.*").unwrap();
        assert!(m.matches("https://github.com/acme/app/.github/workflows/r.yml@refs/heads/main"));
        assert!(!m.matches("https://evil.example/https://github.com/acme/x"));
        // A user regex that "forgot" anchors, and an alternation that would
        // escape a naive ^...$ wrapper.
        let m = Matcher::regex(r"acme\.com").unwrap();
        assert!(m.matches("acme.com"));
        assert!(!m.matches("acme.com.evil"));
        assert!(!m.matches("evil.acme.com"));
        let m = Matcher::regex(r"a|acme\.com").unwrap();
        assert!(!m.matches("acme.com.evil"));
        let m = Matcher::regex(r"^acme\.com$").unwrap();
        assert!(m.matches("acme.com") && !m.matches("xacme.com"));
        assert!(Matcher::regex("(").is_err());
    }

    #[test]
    fn a_regex_cannot_close_the_anchoring_group() {
        // Wrapped naively this is ^(?:x)|(?:.*)$: it matches everything.
        for escape in ["x)|(?:.*", "x)|.*|(?:y", ".*)|(", "a)(b"] {
            assert!(
                Matcher::regex(escape).is_err(),
                "{escape:?} compiled and would escape the anchors"
            );
        }
    }

    #[test]
    fn uppercase_patterns_are_refused_with_the_fix() {
        let e = ImagePattern::parse("Docker.IO/library/*", canonical).unwrap_err();
        assert!(e.to_string().contains("\"docker.io/library/*\""), "{e}");
        assert!(ImagePattern::parse("ghcr.io/Acme/**", canonical).is_err());
    }

    #[test]
    fn many_double_stars_match_in_linear_time() {
        // A backtracking matcher takes exponential time on this (the test
        // would not finish); a compiled one answers at once.
        let p = pat(&format!("ghcr.io/{}x", "**/a/".repeat(12)));
        let long = format!("ghcr.io/{}b", "a/".repeat(200));
        assert!(!p.matches(&long));
        assert!(pat("ghcr.io/**/**/x").matches("ghcr.io/x"));
    }
}
