//! Objects in an S3-compatible bucket shared by replicas: [`client`] speaks
//! the S3 API; [`upload`] sends one object up, visible only once
//! completed; [`objects`] names objects by digest and reads them back by
//! range; [`bucket`] is the object store over them, with local copies
//! ([`copies`]); [`access`] records when objects were last used, across
//! replicas, for `portcullis gc`.
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
//! were already built, so at least that much on its own. This module must
//! not know about the index, tags, upstreams or the HTTP of the pull API.

pub mod access;
pub mod bucket;
pub mod client;
mod copies;
pub mod objects;
pub mod upload;

pub use bucket::{BucketSettings, BucketStore};
