//! Serving HTTPS: a rustls acceptor from the configured certificate and key,
//! and (with `auth.client_ca`) client certificates.
//!
//! Offers h2 and HTTP/1.1 by ALPN. A client certificate is optional (nodes
//! may sign in with a password instead), but one that is presented must
//! chain to `client_ca` or the handshake fails. The key is used here and
//! never logged. This module must not read files: the config module already
//! has.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

pub fn acceptor(
    cfg: &TlsConfig,
    client_ca: &[CertificateDer<'static>],
) -> Result<TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in client_ca {
            roots.add(c.clone())?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| rustls::Error::General(format!("auth.client_ca: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut server = builder.with_single_cert(cfg.cert_chain.clone(), cfg.key.clone_key())?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The subject CN of a verified client certificate, if it has a usable
/// one (printable, at most 256 bytes).
pub fn certificate_cn(der: &CertificateDer<'_>) -> Option<String> {
    use x509_cert::der::Decode as _;
    use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
    let cert = x509_cert::Certificate::from_der(der.as_ref()).ok()?;
    let cn_oid = x509_cert::der::oid::db::rfc4519::CN;
    let value = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == cn_oid)?
        .value
        .clone();
    let text = Utf8StringRef::try_from(&value)
        .map(|s| s.as_str().to_owned())
        .or_else(|_| PrintableStringRef::try_from(&value).map(|s| s.as_str().to_owned()))
        .ok()?;
    (!text.is_empty() && text.len() <= 256 && text.chars().all(|c| !c.is_control())).then_some(text)
}
