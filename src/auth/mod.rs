//! Who is asking, and may they pull this repository: client authentication
//! and per-repository access (`[auth]`).
//!
//! Owns the credentials a request may carry (Basic against the htpasswd
//! file, bearer tokens this process signed, client certificates the TLS
//! handshake verified against `client_ca`), the distribution token flow
//! (the `401` challenge naming `/token`, and the tokens `/token` issues for
//! the repositories the rules allow), failed-login accounting and its rate
//! limit. Requests arrive routed; the decision is made from the identity
//! and the normalized repository alone, before anything is read from the
//! cache or the upstream, so a refusal costs nothing and says nothing about
//! what exists. Whether a repository holds a blob is the cache's question.
//! This module must not read content or render responses.

pub mod access;
pub mod htpasswd;
pub mod limiter;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::clock::Clock;
use crate::config::{AuthConfig, UpstreamConfig};
use crate::metrics::Metrics;
use access::{Access, AccessError};
use htpasswd::{Htpasswd, HtpasswdError, LoginFailure};
use token::{Claims, Signer, TokenError};

/// The `service` of the challenge and the tokens.
pub const SERVICE: &str = "portcullis";
/// Scopes read from one token request, at most.
const MAX_REQUESTED: usize = 32;
/// Longest `scope` parameter read.
const MAX_SCOPE_PARAM: usize = 4096;

/// What the server knows about the connection a request came on (a
/// request extension).
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// The subject CN of a client certificate the handshake verified.
    pub certificate_cn: Option<String>,
}

/// Why `[auth]` cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("auth.htpasswd")]
    Htpasswd(#[source] HtpasswdError),
    #[error("invalid [auth] rules")]
    Access(#[source] AccessError),
}

/// Why a request was not let through.
#[derive(Debug, thiserror::Error)]
pub enum Unauthorized {
    #[error("authentication required")]
    Missing,
    #[error("invalid username or password")]
    Login,
    #[error("invalid bearer token")]
    Token(#[source] TokenError),
    #[error("the bearer token does not grant pull on {0}: ask /token for it")]
    Scope(String),
    #[error("unsupported or malformed Authorization header")]
    Malformed,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Answered with `401` and the challenge.
    #[error("unauthorized")]
    Unauthorized {
        #[source]
        why: Unauthorized,
        challenge: String,
    },
    /// Signed in, not allowed: `403`, whether or not the image exists.
    #[error("{identity} may not pull {reference}")]
    Forbidden { identity: String, reference: String },
    /// `429`.
    #[error("too many failed logins from this address: try again in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// `429`: more logins wait for a password check than are let wait.
    #[error("too many logins are being checked: try again shortly")]
    Busy,
}

/// Who a request is from, once its credentials checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    /// An htpasswd user.
    User(String),
    /// A client certificate: `cn:<subject CN>`.
    Certificate(String),
    /// A bearer token's claims.
    Token(Claims),
}

impl Caller {
    /// The identity access rules match and logs show (`None`: nobody).
    pub fn identity(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::User(u) | Caller::Certificate(u) => Some(u),
            Caller::Token(c) => (!c.sub.is_empty()).then_some(c.sub.as_str()),
        }
    }

    /// For logs: the identity, or `-`.
    pub fn name(&self) -> &str {
        self.identity().unwrap_or("-")
    }
}

/// A token `/token` issued.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub claims: Claims,
    pub caller: Caller,
}

/// `[auth]`, set up.
pub struct Auth {
    htpasswd: Option<Arc<Htpasswd>>,
    certificates: bool,
    access: Access,
    signer: Signer,
    realm: Option<String>,
    tls: bool,
    health_on_listen: bool,
    failures: limiter::Failures,
    metrics: Metrics,
    clock: Clock,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("htpasswd", &self.htpasswd.is_some())
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

/// `user:password` from a Basic header value's credentials.
fn basic(encoded: &str) -> Option<(String, String)> {
    if encoded.len() > 4 * htpasswd::MAX_CREDENTIAL {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    // A user name goes into log lines: no control characters.
    (!user.is_empty()
        && user.len() <= htpasswd::MAX_CREDENTIAL
        && !user.chars().any(char::is_control)
        && password.len() <= htpasswd::MAX_CREDENTIAL)
        .then(|| (user.to_owned(), password.to_owned()))
}

/// What an `Authorization` header holds.
enum Presented<'a> {
    None,
    Basic(String, String),
    Bearer(&'a str),
    Malformed,
}

fn presented(headers: &HeaderMap) -> Presented<'_> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Presented::None;
    };
    if values.next().is_some() {
        return Presented::Malformed;
    }
    let Ok(value) = value.to_str() else {
        return Presented::Malformed;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        match basic(rest) {
            Some((u, p)) => Presented::Basic(u, p),
            None => Presented::Malformed,
        }
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
        Presented::Bearer(rest.trim())
    } else {
        Presented::Malformed
    }
}

/// The repository names a token request asks pull on: `scope` parameters
/// (repeated, or space-separated in one) of the form
/// `repository:NAME:ACTIONS` with `pull` among the actions. NAME may hold a
/// registry's `:port`.
pub fn requested_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    for kv in query.split('&') {
        let Some(v) = kv
            .strip_prefix("scope=")
            .filter(|v| v.len() <= MAX_SCOPE_PARAM)
        else {
            continue;
        };
        let Some(v) = crate::router::percent_decode(&v.replace('+', " ")) else {
            continue;
        };
        for scope in v.split(' ') {
            let Some(rest) = scope.strip_prefix("repository:") else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            if actions.split(',').any(|a| a == "pull" || a == "*")
                && !names.iter().any(|n| n == name)
                && names.len() < MAX_REQUESTED
            {
                names.push(name.to_owned());
            }
        }
    }
    names
}

impl Auth {
    /// Set up from the config (blocking: reads the htpasswd file).
    pub fn new(
        cfg: &AuthConfig,
        upstreams: &[UpstreamConfig],
        tls: bool,
        metrics: Metrics,
        clock: Clock,
    ) -> Result<Auth, SetupError> {
        let htpasswd = cfg
            .htpasswd
            .as_deref()
            .map(Htpasswd::open)
            .transpose()
            .map_err(SetupError::Htpasswd)?
            .map(Arc::new);
        let access =
            Access::new(&cfg.anonymous, &cfg.access, upstreams).map_err(SetupError::Access)?;
        Ok(Auth {
            htpasswd,
            certificates: !cfg.client_ca.is_empty(),
            access,
            signer: Signer::new(
                cfg.token_key.as_ref().map(|k| k.expose()),
                cfg.token_ttl,
                clock.clone(),
            ),
            realm: cfg.realm.clone(),
            tls,
            health_on_listen: cfg.health_on_listen,
            failures: limiter::Failures::default(),
            metrics,
            clock,
        })
    }

    /// Reload the htpasswd file when it changes. Call within the runtime.
    pub fn spawn_reloader(&self) {
        if let Some(h) = &self.htpasswd {
            htpasswd::spawn_reloader(h.clone());
        }
    }

    /// Users in the htpasswd file now (for `check-config` and logs).
    pub fn users(&self) -> usize {
        self.htpasswd.as_ref().map_or(0, |h| h.entries().len())
    }

    pub fn health_on_listen(&self) -> bool {
        self.health_on_listen
    }

    pub fn token_ttl(&self) -> std::time::Duration {
        self.signer.ttl()
    }

    /// The `WWW-Authenticate` value: the token endpoint as the client
    /// reached us (`host`, from the request), for `reference` if any.
    fn challenge(&self, host: Option<&str>, reference: Option<&str>, insufficient: bool) -> String {
        let realm = match &self.realm {
            Some(r) => r.clone(),
            None => {
                let scheme = if self.tls { "https" } else { "http" };
                // The client's own Host: where it will find us again. Only
                // authority characters are echoed.
                let host = host
                    .filter(|h| {
                        !h.is_empty()
                            && h.len() <= 255
                            && h.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
                    })
                    .unwrap_or("localhost");
                format!("{scheme}://{host}/token")
            }
        };
        let mut c = format!("Bearer realm=\"{realm}\",service=\"{SERVICE}\"");
        if let Some(r) = reference {
            c.push_str(&format!(",scope=\"repository:{r}:pull\""));
        }
        if insufficient {
            c.push_str(",error=\"insufficient_scope\"");
        }
        c
    }

    fn unauthorized(
        &self,
        why: Unauthorized,
        host: Option<&str>,
        reference: Option<&str>,
    ) -> AuthError {
        let reason = match &why {
            Unauthorized::Missing => None,
            Unauthorized::Login => None,
            Unauthorized::Token(e) => Some(e.reason()),
            Unauthorized::Scope(_) => Some("scope"),
            Unauthorized::Malformed => Some("bad_header"),
        };
        if let Some(r) = reason {
            self.metrics.auth_failure(r);
        }
        let insufficient = matches!(why, Unauthorized::Scope(_));
        AuthError::Unauthorized {
            challenge: self.challenge(host, reference, insufficient),
            why,
        }
    }

    /// Check a Basic login, counting and rate-limiting failures by address.
    async fn login(
        &self,
        user: &str,
        password: &str,
        peer: &Peer,
    ) -> Result<Option<Caller>, AuthError> {
        let now = self.clock.instant();
        let addr = peer.addr.map(|a| a.ip());
        let Some(h) = &self.htpasswd else {
            // No htpasswd file: no Basic login can succeed.
            self.metrics
                .auth_failure(LoginFailure::UnknownUser.reason());
            return Ok(None);
        };
        // The same login verified moments ago is no guess: no bcrypt, no limit.
        if h.remembered(user, password, now) {
            return Ok(Some(Caller::User(user.to_owned())));
        }
        if let Some(a) = addr
            && let Err(retry_after) = self.failures.begin(a, now)
        {
            self.metrics.auth_failure("rate_limited");
            return Err(AuthError::RateLimited { retry_after });
        }
        match h.verify(user, password, now).await {
            Ok(()) => {
                if let Some(a) = addr {
                    self.failures.succeeded(a);
                }
                Ok(Some(Caller::User(user.to_owned())))
            }
            Err(LoginFailure::Busy) => {
                if let Some(a) = addr {
                    self.failures.succeeded(a);
                }
                self.metrics.auth_failure(LoginFailure::Busy.reason());
                Err(AuthError::Busy)
            }
            Err(failure) => {
                self.metrics.auth_failure(failure.reason());
                // The user name is logged (it is not secret and helps find a
                // misconfigured node); the password never is.
                tracing::warn!(
                    user,
                    client = %addr.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                    reason = failure.reason(),
                    "login failed"
                );
                Ok(None)
            }
        }
    }

    /// Who the request is from; the inner error for credentials that did
    /// not check out (the outer one: not checked at all, rate limited).
    async fn caller(
        &self,
        headers: &HeaderMap,
        peer: &Peer,
    ) -> Result<Result<Caller, Unauthorized>, AuthError> {
        Ok(match presented(headers) {
            Presented::Basic(user, password) => match self.login(&user, &password, peer).await? {
                Some(c) => Ok(c),
                None => Err(Unauthorized::Login),
            },
            Presented::Bearer(token) => match self.signer.check(token) {
                Ok(claims) => {
                    // A user removed from the htpasswd file loses their
                    // tokens at the next request, not when they expire.
                    let revoked = !claims.sub.is_empty()
                        && !claims.sub.starts_with("cn:")
                        && !self
                            .htpasswd
                            .as_ref()
                            .is_some_and(|h| h.entries().contains(&claims.sub));
                    if revoked {
                        Err(Unauthorized::Token(TokenError::Signature))
                    } else {
                        Ok(Caller::Token(claims))
                    }
                }
                Err(e) => Err(Unauthorized::Token(e)),
            },
            Presented::Malformed => Err(Unauthorized::Malformed),
            Presented::None => match (&peer.certificate_cn, self.certificates) {
                (Some(cn), true) => Ok(Caller::Certificate(format!("cn:{cn}"))),
                _ => Ok(Caller::Anonymous),
            },
        })
    }

    /// May this request pull `reference` (normalized)? `host` is the
    /// request's authority, for the challenge.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        peer: &Peer,
        host: Option<&str>,
        reference: &str,
    ) -> Result<Caller, AuthError> {
        let caller = match self.caller(headers, peer).await? {
            Ok(c) => c,
            Err(why) => return Err(self.unauthorized(why, host, Some(reference))),
        };
        let allowed = match &caller {
            Caller::Token(claims) => {
                if claims.grants(reference) {
                    true
                } else {
                    return Err(self.unauthorized(
                        Unauthorized::Scope(reference.to_owned()),
                        host,
                        Some(reference),
                    ));
                }
            }
            c => self.access.allows(c.identity(), reference),
        };
        match (allowed, caller.identity()) {
            (true, _) => Ok(caller),
            (false, None) => Err(self.unauthorized(Unauthorized::Missing, host, Some(reference))),
            (false, Some(identity)) => {
                self.metrics.auth_failure("forbidden");
                Err(AuthError::Forbidden {
                    identity: identity.to_owned(),
                    reference: reference.to_owned(),
                })
            }
        }
    }

    /// `GET /v2/`: any credentials that check out (a token, even one
    /// granting nothing, a login, a certificate); none gets the challenge.
    pub async fn ping(
        &self,
        headers: &HeaderMap,
        peer: &Peer,
        host: Option<&str>,
    ) -> Result<Caller, AuthError> {
        match self.caller(headers, peer).await? {
            Ok(Caller::Anonymous) => Err(self.unauthorized(Unauthorized::Missing, host, None)),
            Ok(c) => Ok(c),
            Err(why) => Err(self.unauthorized(why, host, None)),
        }
    }

    /// `GET /token`: a token for whoever the request proves to be (nobody,
    /// without credentials), granting pull on those of `references`
    /// (normalized) the rules allow them. A bearer token is not a
    /// credential here: tokens are not renewed from tokens.
    pub async fn issue(
        &self,
        headers: &HeaderMap,
        peer: &Peer,
        host: Option<&str>,
        references: &[String],
    ) -> Result<Issued, AuthError> {
        let caller = match presented(headers) {
            Presented::Bearer(_) => Caller::Anonymous,
            _ => match self.caller(headers, peer).await? {
                Ok(c) => c,
                Err(why) => return Err(self.unauthorized(why, host, None)),
            },
        };
        let granted: Vec<String> = references
            .iter()
            .filter(|r| self.access.allows(caller.identity(), r))
            .cloned()
            .collect();
        let (token, claims) = self.signer.issue(caller.identity().unwrap_or(""), granted);
        Ok(Issued {
            token,
            claims,
            caller,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_requests_name_repositories_with_pull() {
        let q = "service=portcullis&scope=repository:127.0.0.1:5000/test/img:pull&scope=repository%3Adocker.io%2Flibrary%2Falpine%3Apull%2Cpush+repository:x/y:push&scope=registry:catalog:*&account=alice";
        assert_eq!(
            requested_names(q),
            vec!["127.0.0.1:5000/test/img", "docker.io/library/alpine"]
        );
    }

    #[test]
    fn authorization_headers_are_read_strictly() {
        let mut h = HeaderMap::new();
        assert!(matches!(presented(&h), Presented::None));
        h.insert(AUTHORIZATION, "Basic YWxpY2U6czNjcjp0".parse().unwrap());
        assert!(matches!(presented(&h), Presented::Basic(u, p) if u == "alice" && p == "s3cr:t"));
        h.insert(AUTHORIZATION, "bearer abc.def".parse().unwrap());
        assert!(matches!(presented(&h), Presented::Bearer("abc.def")));
        // "a\nb:c": a control character in the user name.
        for bad in [
            "Basic !!!",
            "Basic Og==",
            "Basic YQpiOmM=",
            "Digest x",
            "Bearer ",
            "Basic",
        ] {
            h.insert(AUTHORIZATION, bad.parse().unwrap());
            assert!(matches!(presented(&h), Presented::Malformed), "{bad}");
        }
        h.insert(AUTHORIZATION, "Bearer a".parse().unwrap());
        h.append(AUTHORIZATION, "Bearer b".parse().unwrap());
        assert!(matches!(presented(&h), Presented::Malformed));
    }
}
