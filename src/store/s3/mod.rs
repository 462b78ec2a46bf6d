//! Objects in an S3-compatible bucket shared by replicas (issue 14, in
//! progress): [`client`] speaks the S3 API; [`upload`] streams one object
//! up as a multipart upload that appears only when completed. This module must not know about
//! the index, tags, upstreams or the HTTP of the pull API.

pub mod client;
pub mod upload;
