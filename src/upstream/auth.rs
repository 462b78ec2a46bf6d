//! Authenticating to one upstream: `WWW-Authenticate` challenges, bearer
//! tokens from the upstream's token realm, HTTP Basic.
//!
//! Owns the token cache (per scope, until the token expires) and the rules for
//! where credentials may go: the configured credentials are sent only to the
//! upstream's own origin (as Basic) or to the token realm it names (to obtain
//! a token), never over plain HTTP unless the upstream itself is plain HTTP,
//! and never to a redirect target on another origin (the client module checks
//! the origin before attaching what this module returns). Nothing here
//! comes from clients of portcullis, and no secret is ever logged. This module
//! must not decide retries or interpret registry responses beyond auth.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Empty;
use serde::Deserialize;

use super::UpstreamError;
use super::client::{HttpClient, Pace, encode_query_value, read_limited};
use crate::config::Credentials;

/// Tokens larger than this are refused.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Lifetime assumed when the token response does not say (the spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is reused for at most this long, whatever the realm claims.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How long to reuse a token the realm says lives `expires_in` seconds:
/// clamped to [`MAX_TOKEN_LIFETIME`], renewed a little early so it never
/// expires in flight.
fn token_lifetime(expires_in: Option<u64>) -> Duration {
    expires_in
        .filter(|s| *s > 0)
        .map_or(DEFAULT_TOKEN_LIFETIME, |s| {
            Duration::from_secs(s).min(MAX_TOKEN_LIFETIME)
        })
        .mul_f32(0.9)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

impl Challenge {
    /// Parse a challenge; `None` if it is neither a usable Bearer nor Basic one.
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(params)?;
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    }
}

/// `k1="v1", k2=v2` with quoted strings that may hold commas and escapes.
fn parse_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_owned();
        if key.is_empty() || key.contains([' ', ',', '"']) {
            return None;
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => v.push(chars.next()?.1),
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &quoted[end? + 1..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        out.push((key, value));
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    /// Any JSON number: one too large or fractional must not fail the pull.
    expires_in: Option<serde_json::Number>,
}

struct CachedToken {
    header: HeaderValue,
    expires: Instant,
}

/// Credentials and cached tokens for one upstream.
pub struct Auth {
    upstream: String,
    base: Uri,
    credentials: Option<Credentials>,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, CachedToken>>,
    /// Set once the upstream has asked for Basic.
    basic: Mutex<bool>,
}

impl Auth {
    pub fn new(upstream: String, base: Uri, credentials: Option<Credentials>) -> Auth {
        Auth {
            upstream,
            base,
            credentials,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(false),
        }
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        let c = self.credentials.as_ref()?;
        let raw = format!("{}:{}", c.username, c.password.expose());
        let mut v = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(raw))).ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    /// The header to send for `scope` before any challenge, if one is known.
    pub fn cached(&self, scope: &str) -> Option<HeaderValue> {
        if *self.basic.lock().expect("auth lock") {
            return self.basic_header();
        }
        let tokens = self.tokens.lock().expect("auth lock");
        tokens
            .get(scope)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.header.clone())
    }

    /// Answer a 401 challenge: returns the header to retry with.
    pub async fn answer(
        &self,
        challenge: &Challenge,
        scope: &str,
        client: &HttpClient,
        pace: Pace,
    ) -> Result<HeaderValue, UpstreamError> {
        match challenge {
            Challenge::Basic => {
                let header = self
                    .basic_header()
                    .ok_or_else(|| UpstreamError::Unauthorized {
                        upstream: self.upstream.clone(),
                    })?;
                *self.basic.lock().expect("auth lock") = true;
                Ok(header)
            }
            Challenge::Bearer {
                realm,
                service,
                scope: challenge_scope,
            } => {
                let wanted = challenge_scope.as_deref().unwrap_or(scope);
                let (header, lifetime) = self
                    .fetch_token(realm, service.as_deref(), wanted, client, pace)
                    .await?;
                let now = Instant::now();
                let expires = now.checked_add(lifetime).unwrap_or(now);
                self.tokens.lock().expect("auth lock").insert(
                    scope.to_owned(),
                    CachedToken {
                        header: header.clone(),
                        expires,
                    },
                );
                Ok(header)
            }
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        client: &HttpClient,
        pace: Pace,
    ) -> Result<(HeaderValue, Duration), UpstreamError> {
        let timeout = pace.timeout;
        let bad_realm = |reason: &'static str| UpstreamError::BadRealm {
            upstream: self.upstream.clone(),
            reason,
        };
        let realm_uri: Uri = realm.parse().map_err(|_| bad_realm("not a URL"))?;
        match realm_uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.base.scheme_str() == Some("http") => {}
            Some("http") => return Err(bad_realm("plain-http token realm for an https upstream")),
            _ => return Err(bad_realm("not an http(s) URL")),
        }
        if realm_uri
            .authority()
            .is_none_or(|a| a.as_str().contains('@'))
        {
            return Err(bad_realm("no host, or user-info in the URL"));
        }
        let mut query = String::new();
        for (k, v) in [
            ("service", service),
            ("scope", Some(scope).filter(|s| !s.is_empty())),
        ] {
            if let Some(v) = v {
                query.push(if query.is_empty() && realm_uri.query().is_none() {
                    '?'
                } else {
                    '&'
                });
                query.push_str(k);
                query.push('=');
                query.push_str(&encode_query_value(v));
            }
        }
        let uri: Uri = format!("{realm}{query}")
            .parse()
            .map_err(|_| bad_realm("not a URL"))?;
        let mut req = Request::builder().method(Method::GET).uri(uri);
        if let Some(h) = self.basic_header() {
            req = req.header(AUTHORIZATION, h);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|_| bad_realm("not a URL"))?;
        let resp = tokio::time::timeout(timeout, client.request(req))
            .await
            .map_err(|_| UpstreamError::Timeout {
                upstream: self.upstream.clone(),
                timeout,
            })?
            .map_err(|source| UpstreamError::Connect {
                upstream: self.upstream.clone(),
                source,
            })?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(UpstreamError::Unauthorized {
                    upstream: self.upstream.clone(),
                });
            }
            status => {
                return Err(UpstreamError::Status {
                    upstream: self.upstream.clone(),
                    status,
                });
            }
        }
        let body = read_limited(resp.into_body(), MAX_TOKEN_RESPONSE, pace, &self.upstream).await?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| UpstreamError::Invalid {
                upstream: self.upstream.clone(),
                what: "token response is not the expected JSON",
            })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::Invalid {
                upstream: self.upstream.clone(),
                what: "token response holds no token",
            })?;
        let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            UpstreamError::Invalid {
                upstream: self.upstream.clone(),
                what: "token holds characters not allowed in a header",
            }
        })?;
        header.set_sensitive(true);
        let expires_in = parsed.expires_in.map(|n| {
            n.as_u64().unwrap_or_else(|| match n.as_f64() {
                Some(f) if f >= 1.0 => u64::MAX,
                _ => 0,
            })
        });
        Ok((header, token_lifetime(expires_in)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetimes_are_clamped() {
        assert_eq!(token_lifetime(None), DEFAULT_TOKEN_LIFETIME.mul_f32(0.9));
        assert_eq!(token_lifetime(Some(0)), DEFAULT_TOKEN_LIFETIME.mul_f32(0.9));
        assert_eq!(token_lifetime(Some(300)), Duration::from_secs(270));
        // What would overflow an Instant is an hour at most.
        assert_eq!(
            token_lifetime(Some(u64::MAX)),
            MAX_TOKEN_LIFETIME.mul_f32(0.9)
        );
        let now = Instant::now();
        assert!(now.checked_add(token_lifetime(Some(u64::MAX))).is_some());
    }

    #[test]
    fn parses_docker_hub_challenge() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
    }

    #[test]
    fn parses_quoted_commas_escapes_and_spacing() {
        let c = Challenge::parse(
            r#"bearer  realm = "http://127.0.0.1:1/token" , scope="repository:a/b:pull,push", error="insufficient_scope", note="say \"hi\"""#,
        )
        .unwrap();
        let Challenge::Bearer {
            realm,
            scope,
            service,
        } = c
        else {
            panic!()
        };
        assert_eq!(realm, "http://127.0.0.1:1/token");
        assert_eq!(scope.as_deref(), Some("repository:a/b:pull,push"));
        assert_eq!(service, None);
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
    }

    #[test]
    fn refuses_unusable_challenges() {
        for bad in [
            "",
            "Negotiate abc",
            "Bearer service=\"x\"",
            "Bearer realm=\"unterminated",
            "Bearer realm=\"a\" junk",
        ] {
            assert_eq!(Challenge::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn basic_header_is_sensitive_and_absent_without_credentials() {
        let anon = Auth::new("u".into(), "https://x.io/".parse().unwrap(), None);
        assert!(anon.basic_header().is_none());
        let auth = Auth::new(
            "u".into(),
            "https://x.io/".parse().unwrap(),
            Some(Credentials {
                username: "bot".into(),
                password: crate::config::Secret::new("pw".into()),
            }),
        );
        let h = auth.basic_header().unwrap();
        assert!(h.is_sensitive());
        assert_eq!(
            h.to_str().unwrap(),
            format!("Basic {}", STANDARD.encode("bot:pw"))
        );
    }
}
