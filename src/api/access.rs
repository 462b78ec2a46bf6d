//! Letting a request in under `[auth]`, before it reaches the cache: the
//! token endpoint, the `/v2/` ping, and the access check of every
//! repository request (by its normalized name, from the route alone), plus
//! closing health and metrics on the main listener when configured.
//! Decisions are [`crate::auth`]'s; this module turns them into replies or
//! [`ApiError::Auth`]. It must not read content.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::{ApiError, App, Listener, Reply, full};
use crate::auth::{Caller, Peer, requested_names};
use crate::router::{Endpoint, Route, RouteError};

/// What admission decided.
pub(super) enum Admitted {
    /// Go on and answer, for this caller.
    Caller(Caller),
    /// Already answered (the token endpoint).
    Answered(Reply, Caller),
}

impl App {
    pub(super) async fn admit(
        &self,
        route: &Route,
        parts: &Parts,
        listener: Listener,
    ) -> Result<Admitted, ApiError> {
        let Some(auth) = &self.auth else {
            return Ok(Admitted::Caller(Caller::Anonymous));
        };
        let peer = parts.extensions.get::<Peer>().cloned().unwrap_or_default();
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| parts.headers.get(HOST).and_then(|v| v.to_str().ok()));
        let headers = &parts.headers;
        let caller = match &route.endpoint {
            Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics => {
                if listener == Listener::Main && !auth.health_on_listen() {
                    return Err(ApiError::Route(RouteError::NotFound));
                }
                Ok(Caller::Anonymous)
            }
            Endpoint::ApiBase => auth.ping(headers, &peer, host).await,
            Endpoint::Token => {
                // Names as the clients write them in scopes, resolved the way
                // their paths are: to the normalized repository.
                let references: Vec<String> = requested_names(parts.uri.query().unwrap_or(""))
                    .iter()
                    .filter_map(|n| match self.router.resolve_image(n) {
                        Ok((t, None)) => Some(t.reference()),
                        _ => None,
                    })
                    .collect();
                let issued = auth
                    .issue(headers, &peer, host, &references)
                    .await
                    .map_err(ApiError::Auth)?;
                tracing::debug!(
                    client = issued.caller.name(),
                    granted = %issued.claims.access.join(","),
                    "token issued"
                );
                let issued_at = chrono::DateTime::from_timestamp(issued.claims.iat as i64, 0)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                let body = serde_json::json!({
                    "token": issued.token,
                    "access_token": issued.token,
                    "expires_in": auth.token_ttl().as_secs(),
                    "issued_at": issued_at,
                });
                let mut r = Response::new(full(Bytes::from(body.to_string())));
                *r.status_mut() = StatusCode::OK;
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return Ok(Admitted::Answered(Reply::new(r, None), issued.caller));
            }
            _ => match &route.target {
                Some(t) => auth.authorize(headers, &peer, host, &t.reference()).await,
                None => return Err(ApiError::Route(RouteError::NotFound)),
            },
        }
        .map_err(ApiError::Auth);
        caller.map(Admitted::Caller)
    }
}
