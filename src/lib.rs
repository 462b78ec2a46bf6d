//! Portcullis: a pull-through cache for OCI/Docker registries that serves
//! only what it has verified.
//!
//! The request path, module by module:
//! [`server`] (listeners, TLS, access log) → [`router`] (which endpoint,
//! which upstream, which repository) → [`api`] (HTTP semantics of the pull
//! API) → [`gate`] (policy) → [`cache`] (verified local content, filled by a
//! proxy decorator) → [`upstream`] (registries, auth). Beside it:
//! [`store`] (content-addressed bytes), [`config`], [`reference`] and
//! [`digest`] (grammar), [`json`] (strict JSON), [`manifest`] (the one parsed model of manifests),
//! [`media`], [`clock`], [`metrics`], [`telemetry`], and
//! [`error`], the one place errors become responses.

pub mod airgap;
pub mod api;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod digest;
pub mod error;
pub mod gate;
pub mod https;
pub mod json;
pub mod manifest;
pub mod media;
pub mod metrics;
pub mod notary;
pub mod policy;
pub mod reference;
pub mod router;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod upstream;
