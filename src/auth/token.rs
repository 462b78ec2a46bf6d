//! Bearer tokens that `GET /token` hands out and every request may carry.
//!
//! A token is `base64url(claims) "." base64url(HMAC-SHA256(key, claims))`:
//! the claims say who it was issued to, which normalized repositories it
//! grants pull on, and when it expires. Only portcullis reads them (the
//! runtimes treat tokens as opaque), so there is no JWT machinery to get
//! wrong: the MAC is checked in constant time before the claims are parsed,
//! the claims are parsed strictly, and expiry is decided by the [`Clock`].
//! The key is generated at start or read from `auth.token_key` (replicas
//! behind one Service share it). This module must not decide who may pull
//! what: it signs and checks what it is given.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;

/// Longest token accepted (a full grant of [`MAX_SCOPES`] long names fits).
pub const MAX_TOKEN: usize = 8 * 1024;
/// Repositories one token may grant, at most.
pub const MAX_SCOPES: usize = 16;
/// How far in the future an issue time may lie (clock steps between replicas).
const SKEW: Duration = Duration::from_secs(60);

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not verify (issued by another key, or altered)")]
    Signature,
    #[error("the token has expired")]
    Expired,
}

impl TokenError {
    /// The `reason` label of `portcullis_auth_failures_total`.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed | TokenError::Signature => "bad_token",
            TokenError::Expired => "expired_token",
        }
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The identity it was issued to (`alice`, `cn:node-1`, or `-`).
    pub sub: String,
    /// Normalized repositories (`docker.io/library/alpine`) it grants pull on.
    pub access: Vec<String>,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

impl Claims {
    pub fn grants(&self, reference: &str) -> bool {
        self.access.iter().any(|a| a == reference)
    }
}

/// Signs and checks tokens with one key.
pub struct Signer {
    key: hmac::Key,
    ttl: Duration,
    clock: Clock,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Signer {
    /// A signer with `key` (at least 32 bytes), or a fresh random key.
    pub fn new(key: Option<&[u8]>, ttl: Duration, clock: Clock) -> Signer {
        let key = match key {
            Some(k) => hmac::Key::new(hmac::HMAC_SHA256, k),
            None => hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .expect("the system's random source works"),
        };
        Signer { key, ttl, clock }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `sub` granting `access` (at most [`MAX_SCOPES`]), and its claims.
    pub fn issue(&self, sub: &str, mut access: Vec<String>) -> (String, Claims) {
        access.truncate(MAX_SCOPES);
        let iat = unix(self.clock.now());
        let claims = Claims {
            sub: sub.to_owned(),
            access,
            iat,
            exp: iat.saturating_add(self.ttl.as_secs()),
        };
        let body = serde_json::to_vec(&claims).expect("claims serialize");
        let tag = hmac::sign(&self.key, &body);
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        );
        (token, claims)
    }

    /// The claims of a token this signer issued and that has not expired.
    pub fn check(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        // The MAC first: nothing of an unauthenticated body is parsed.
        hmac::verify(&self.key, &body, &tag).map_err(|_| TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(&body).map_err(|_| TokenError::Malformed)?;
        let now = unix(self.clock.now());
        if claims.access.len() > MAX_SCOPES
            || claims.iat > now.saturating_add(SKEW.as_secs())
            || claims.exp < claims.iat
        {
            return Err(TokenError::Malformed);
        }
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(clock: &Clock) -> Signer {
        Signer::new(Some(&[7u8; 32]), Duration::from_secs(300), clock.clone())
    }

    #[test]
    fn a_token_grants_exactly_what_it_was_issued_for() {
        let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let s = signer(&clock);
        let (token, _) = s.issue("alice", vec!["ghcr.io/acme/app".into()]);
        let claims = s.check(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert!(claims.grants("ghcr.io/acme/app"));
        assert!(!claims.grants("ghcr.io/acme/other"));
        assert!(!claims.grants("ghcr.io/acme/app/sub"));
        assert_eq!(claims.exp - claims.iat, 300);
    }

    #[test]
    fn tokens_expire_by_the_clock() {
        let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let s = signer(&clock);
        let (token, _) = s.issue("alice", vec!["a.io/x".into()]);
        clock.advance(Duration::from_secs(299));
        assert!(s.check(&token).is_ok());
        clock.advance(Duration::from_secs(1));
        assert_eq!(s.check(&token), Err(TokenError::Expired));
    }

    #[test]
    fn altered_or_foreign_tokens_are_refused() {
        let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let s = signer(&clock);
        let (token, _) = s.issue("alice", vec!["a.io/x".into()]);
        // Another key (another instance without a shared token_key).
        let other = Signer::new(None, Duration::from_secs(300), clock.clone());
        assert_eq!(other.check(&token), Err(TokenError::Signature));
        // The claims rewritten to grant more, the tag kept.
        let (_, tag) = token.split_once('.').unwrap();
        let forged = serde_json::json!({"sub":"alice","access":["a.io/x","a.io/secret"],"iat":1_800_000_000u64,"exp":1_900_000_000u64});
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(forged.to_string().as_bytes())
        );
        assert_eq!(s.check(&forged), Err(TokenError::Signature));
        for bad in ["", "x", "a.b.c", "!!.!!", &"a".repeat(MAX_TOKEN + 1)] {
            assert!(s.check(bad).is_err(), "{bad:.20}");
        }
    }

    #[test]
    fn grants_are_capped() {
        let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let s = signer(&clock);
        let many: Vec<String> = (0..40).map(|i| format!("a.io/r{i}")).collect();
        let (token, claims) = s.issue("bob", many);
        assert_eq!(claims.access.len(), MAX_SCOPES);
        assert_eq!(s.check(&token).unwrap().access.len(), MAX_SCOPES);
    }
}
