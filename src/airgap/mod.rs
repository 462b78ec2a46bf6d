//! Air-gapped sites: carrying images across the gap with everything the
//! gate needs to decide on them offline.
//!
//! [`layout`] is the one model of the OCI image layout portcullis writes
//! and reads; [`export`] fills one from the configured upstreams, after
//! the policy has decided; [`import`] checks every object of one into the
//! cache. At serve time nothing changes: an imported image passes the gate
//! only if its signatures and attestations verify offline. This module
//! must not serve anything.

pub mod export;
pub mod import;
pub mod layout;
pub mod progress;
pub mod tarball;
pub mod warm;

/// The address to reach a listener of this machine at: an unspecified
/// address (`0.0.0.0`, `[::]`) is reached on the loopback.
pub(crate) fn local_address(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}
