//! The outgoing HTTPS connector every client of portcullis uses (upstream
//! registries and Notary servers, the S3 bucket): rustls with ring, the web
//! PKI roots plus any configured CA, plain `http://` allowed for loopback
//! and test setups, no Nagle delay, a connect timeout. This module must not
//! send requests.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;

/// A connector trusting the web PKI and `extra_roots`; h2 offered by ALPN
/// when `h2`.
pub fn connector(
    extra_roots: &[CertificateDer<'static>],
    connect_timeout: Duration,
    h2: bool,
) -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots.add(cert.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    Ok(if h2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.wrap_connector(http)
    })
}
