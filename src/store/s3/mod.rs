//! Objects in an S3-compatible bucket shared by replicas (issue 14, in
//! progress): [`client`] speaks the S3 API; [`upload`] streams one object
//! up as a multipart upload that appears only when completed; [`objects`]
//! names objects by digest and reads them back by range.
//!
//! Why `rusty-s3` over the hyper client already built, rather than
//! `object_store` or the AWS SDK: it signs and parses the XML and does no
//! I/O, so streaming multipart goes through the client, timeouts and TLS
//! settings portcullis already has. Measured on this 2-core machine
//! (2026-12-02, dev build, into portcullis's warm target directory):
//! `rusty-s3` with its default features added 1 min 44 s over the 14 s
//! rebuild of portcullis itself (with `xml` and `aws-lc-rs` only, as used,
//! less: aws-lc-rs is already built for sigstore-verify); `object_store`
//! with `aws` added a further 2 min 53 s after `rusty-s3`'s dependencies
//! were already built, so at least that much on its own. This module must not know about
//! the index, tags, upstreams or the HTTP of the pull API.

pub mod client;
pub mod objects;
pub mod upload;
