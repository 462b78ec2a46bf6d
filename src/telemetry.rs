//! Logging setup: tracing to stderr, as text or JSON.
//!
//! The format comes from the config's `log_format`, overridden by the
//! `PORTCULLIS_LOG_FORMAT` environment variable (`text` or `json`); the level
//! filter from `RUST_LOG` (default `info`). This module must not log request
//! data itself: the access log layer does.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Environment variable that overrides `log_format`.
pub const FORMAT_ENV: &str = "PORTCULLIS_LOG_FORMAT";

/// The format to use: the environment wins over the config.
pub fn effective_format(configured: LogFormat) -> Result<LogFormat, String> {
    match std::env::var(FORMAT_ENV) {
        Ok(v) => LogFormat::parse(v.trim())
            .ok_or_else(|| format!("{FORMAT_ENV}={v:?}: use \"text\" or \"json\"")),
        Err(_) => Ok(configured),
    }
}

/// Install the global subscriber.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}
