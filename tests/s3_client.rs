//! The S3 client of the shared object store (issue 14) against a real
//! Garage node: stat, ranged reads, whole and multipart writes (nothing
//! visible before the upload completes, nothing left after an abort),
//! delete, list, wrong credentials, and the node gone.

mod support;

use std::time::Duration;

use bytes::Bytes;
use portcullis::metrics::Metrics;
use portcullis::store::s3::client::{S3, S3Error, S3Settings};
use support::garage::Garage;

const MIB: usize = 1 << 20;

fn settings(g: &Garage, secret: &str) -> S3Settings {
    S3Settings {
        endpoint: g.endpoint.parse().unwrap(),
        bucket: g.bucket.clone(),
        region: "garage".into(),
        path_style: true,
        access_key_id: g.key_id.clone(),
        secret_access_key: secret.to_owned(),
        ca_certs: Vec::new(),
        timeout: Duration::from_secs(10),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn bytes(n: usize, seed: u8) -> Bytes {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn objects_are_written_read_by_range_listed_and_deleted() {
    let g = Garage::start().unwrap();
    let s3 = S3::new(&settings(&g, &g.secret), Metrics::new()).unwrap();
    runtime().block_on(async {
        let data = bytes(300_000, 1);
        assert_eq!(s3.head("cache/a").await.unwrap(), None);
        assert_eq!(s3.read("cache/a", 0, 10).await.unwrap(), None);
        s3.put("cache/a", data.clone()).await.unwrap();
        s3.put("cache/b", bytes(10, 2)).await.unwrap();
        s3.put("other/c", bytes(10, 3)).await.unwrap();
        assert_eq!(s3.head("cache/a").await.unwrap(), Some(300_000));
        // Ranges: the start, the middle, across the end, past the end.
        assert_eq!(
            s3.read("cache/a", 0, 1000).await.unwrap().unwrap(),
            data.slice(0..1000)
        );
        assert_eq!(
            s3.read("cache/a", 123_456, 65_536).await.unwrap().unwrap(),
            data.slice(123_456..123_456 + 65_536)
        );
        assert_eq!(
            s3.read("cache/a", 299_990, 100).await.unwrap().unwrap(),
            data.slice(299_990..)
        );
        assert!(
            s3.read("cache/a", 300_000, 100)
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
        let (listed, next) = s3.list("cache/", None).await.unwrap();
        let recent = std::time::SystemTime::now() - Duration::from_secs(300);
        assert!(listed.iter().all(|l| l.modified > recent), "{listed:?}");
        let mut keys: Vec<(String, u64)> = listed.into_iter().map(|l| (l.key, l.size)).collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![("cache/a".into(), 300_000), ("cache/b".into(), 10)]
        );
        assert_eq!(next, None);
        s3.delete("cache/a").await.unwrap();
        s3.delete("cache/a").await.unwrap();
        assert_eq!(s3.head("cache/a").await.unwrap(), None);
    });
}

#[test]
fn a_multipart_object_exists_only_once_completed_and_an_abort_leaves_nothing() {
    let g = Garage::start().unwrap();
    let s3 = S3::new(&settings(&g, &g.secret), Metrics::new()).unwrap();
    runtime().block_on(async {
        let (p1, p2) = (bytes(5 * MIB, 4), bytes(MIB + 17, 5));
        let id = s3.create_multipart("cache/big").await.unwrap();
        let e1 = s3
            .upload_part("cache/big", &id, 1, p1.clone())
            .await
            .unwrap();
        let e2 = s3
            .upload_part("cache/big", &id, 2, p2.clone())
            .await
            .unwrap();
        // Parts uploaded, not completed: no object under the key.
        assert_eq!(s3.head("cache/big").await.unwrap(), None);
        s3.complete_multipart("cache/big", &id, &[e1, e2])
            .await
            .unwrap();
        let total = (p1.len() + p2.len()) as u64;
        assert_eq!(s3.head("cache/big").await.unwrap(), Some(total));
        let across = s3
            .read("cache/big", 5 * MIB as u64 - 10, 20)
            .await
            .unwrap()
            .unwrap();
        let mut want = p1.slice(5 * MIB - 10..).to_vec();
        want.extend_from_slice(&p2[..10]);
        assert_eq!(across.to_vec(), want);

        let id = s3.create_multipart("cache/abandoned").await.unwrap();
        let e1 = s3
            .upload_part("cache/abandoned", &id, 1, p1.clone())
            .await
            .unwrap();
        s3.abort_multipart("cache/abandoned", &id).await.unwrap();
        assert_eq!(s3.head("cache/abandoned").await.unwrap(), None);
        assert!(
            s3.complete_multipart("cache/abandoned", &id, &[e1])
                .await
                .is_err()
        );
        assert_eq!(s3.head("cache/abandoned").await.unwrap(), None);
    });
}

#[test]
fn wrong_credentials_and_a_stopped_node_are_errors_of_their_kind() {
    let mut g = Garage::start().unwrap();
    let wrong = S3::new(&settings(&g, &"0".repeat(64)), Metrics::new()).unwrap();
    let s3 = S3::new(&settings(&g, &g.secret), Metrics::new()).unwrap();
    let rt = runtime();
    let e = rt.block_on(wrong.put("cache/x", bytes(10, 6))).unwrap_err();
    assert!(matches!(e, S3Error::Status { status: 403, .. }), "{e}");
    assert!(!e.is_transient());
    assert!(!format!("{:?}", settings(&g, &g.secret)).contains(&g.secret));
    g.stop();
    let e = rt.block_on(s3.head("cache/x")).unwrap_err();
    assert!(e.is_transient(), "{e}");
    g.start_again().unwrap();
    rt.block_on(s3.put("cache/x", bytes(10, 7))).unwrap();
}

#[test]
fn a_streamed_upload_appears_only_when_completed() {
    use portcullis::store::s3::upload::{PART_SIZE, Upload};
    let g = Garage::start().unwrap();
    let s3 = S3::new(&settings(&g, &g.secret), Metrics::new()).unwrap();
    runtime().block_on(async {
        // Three parts and a bit, as the spool grows.
        let data = bytes(3 * PART_SIZE + 12_345, 9);
        let mut up = Upload::new(&s3, "cache/streamed");
        for part in data.chunks(PART_SIZE).take(3) {
            up.part(Bytes::copy_from_slice(part)).await.unwrap();
            assert_eq!(s3.head("cache/streamed").await.unwrap(), None);
        }
        assert!(up.id().is_some(), "a multipart upload");
        up.complete(data.slice(3 * PART_SIZE..)).await.unwrap();
        assert_eq!(
            s3.head("cache/streamed").await.unwrap(),
            Some(data.len() as u64)
        );
        for at in [0, PART_SIZE - 3, 2 * PART_SIZE + 1, 3 * PART_SIZE] {
            let got = s3
                .read("cache/streamed", at as u64, 4096)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, data.slice(at..(at + 4096).min(data.len())), "at {at}");
        }

        // Aborted: nothing under the key, and the upload is gone.
        let mut up = Upload::new(&s3, "cache/aborted");
        up.part(data.slice(..PART_SIZE)).await.unwrap();
        let id = up.id().unwrap().to_owned();
        up.abort().await.unwrap();
        assert_eq!(s3.head("cache/aborted").await.unwrap(), None);
        assert!(
            s3.upload_part("cache/aborted", &id, 9, bytes(10, 1))
                .await
                .is_err()
        );

        // Dropped half-way (a failed fill): aborted in the background.
        let mut up = Upload::new(&s3, "cache/dropped");
        up.part(data.slice(..PART_SIZE)).await.unwrap();
        let id = up.id().unwrap().to_owned();
        drop(up);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s3
            .upload_part("cache/dropped", &id, 9, bytes(10, 1))
            .await
            .is_ok()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the dropped upload lingers"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(s3.head("cache/dropped").await.unwrap(), None);

        // One part's worth or less: a single PUT, no multipart upload.
        let up = Upload::new(&s3, "cache/small");
        assert!(up.id().is_none());
        up.complete(data.slice(..1000)).await.unwrap();
        assert_eq!(s3.head("cache/small").await.unwrap(), Some(1000));

        // An empty object.
        let up = Upload::new(&s3, "cache/empty");
        up.complete(Bytes::new()).await.unwrap();
        assert_eq!(s3.head("cache/empty").await.unwrap(), Some(0));
    });
}

#[test]
fn a_published_object_is_found_by_digest_and_read_by_range() {
    use portcullis::digest::{Algorithm, Digest};
    use portcullis::store::read_chunk;
    use portcullis::store::s3::objects::{WINDOW, key, open};
    let g = Garage::start().unwrap();
    let s3 = S3::new(&settings(&g, &g.secret), Metrics::new()).unwrap();
    // Room for two windows only: readers wait for the budget, never exceed it.
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(2 * WINDOW));
    runtime().block_on(async {
        let data = bytes(2 * WINDOW + 12_345, 11);
        let digest = Digest::of(Algorithm::Sha256, &data);
        assert!(
            open(&s3, "cache/", &digest, &budget)
                .await
                .unwrap()
                .is_none()
        );
        s3.put(&key("cache/", &digest), data.clone()).await.unwrap();
        let object = open(&s3, "cache/", &digest, &budget)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(object.size, data.len() as u64);
        // In chunks, as a response is served: every byte right.
        let mut at = 0;
        while at < data.len() {
            let got = read_chunk(&*object.reader, &digest, at as u64, 256 * 1024)
                .await
                .unwrap();
            assert_eq!(
                got,
                data.slice(at..(at + 256 * 1024).min(data.len())),
                "at {at}"
            );
            at += got.len();
        }
        // Across a window's end, and at the object's end.
        let got = read_chunk(&*object.reader, &digest, WINDOW as u64 - 100, 4096)
            .await
            .unwrap();
        assert_eq!(got, data.slice(WINDOW - 100..WINDOW + 3996));
        let end = data.len() as u64 - 1000;
        let got = read_chunk(&*object.reader, &digest, end, 4096)
            .await
            .unwrap();
        assert_eq!(got, data.slice(end as usize..));
        // Not under another prefix.
        assert!(
            open(&s3, "other/", &digest, &budget)
                .await
                .unwrap()
                .is_none()
        );
        // Deleted under a reader: the read says so.
        let fresh = open(&s3, "cache/", &digest, &budget)
            .await
            .unwrap()
            .unwrap();
        s3.delete(&key("cache/", &digest)).await.unwrap();
        let e = read_chunk(&*fresh.reader, &digest, 0, 10)
            .await
            .unwrap_err();
        assert!(
            portcullis::error::chain(&e).contains("gone from the bucket"),
            "{e:?}"
        );
    });
}
