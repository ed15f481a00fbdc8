//! The S3-compatible server of the object-storage tests: `.ci/run` starts one on loopback (the
//! moto server from PyPI), creates a bucket and exports `STEREO_TEST_S3_BUCKET`, `AWS_ENDPOINT`,
//! `AWS_ALLOW_HTTP` and test credentials. Without it the tests are skipped with a message, unless
//! `STEREO_REQUIRE_S3=1` (set by `.ci/run` once the server answers), where that is a failure.
#![allow(dead_code)]

/// A fresh prefix `s3://bucket/<test>-<pid>-<nanos>` on the test server, or `None` (skipped).
pub fn fresh_prefix(test: &str) -> Option<String> {
    let Ok(bucket) = std::env::var("STEREO_TEST_S3_BUCKET") else {
        assert!(
            std::env::var("STEREO_REQUIRE_S3").as_deref() != Ok("1"),
            "STEREO_REQUIRE_S3=1 but STEREO_TEST_S3_BUCKET is not set"
        );
        eprintln!(
            "SKIPPED {test}: no S3 test server (STEREO_TEST_S3_BUCKET unset; .ci/run starts one)"
        );
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Some(format!(
        "s3://{bucket}/{test}-{}-{nanos}",
        std::process::id()
    ))
}
