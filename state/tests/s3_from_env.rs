//! `s3://` configured by the process environment alone (`AWS_*`, as a deployment sets it), on
//! a real S3 server: a test binary of its own, as it sets process-wide variables.

use sparkwing_state::test_support::S3Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_store_configured_by_the_environment_answers() {
    let s3 = tokio::task::spawn_blocking(S3Server::start).await.unwrap();
    for (key, value) in s3.aws_config() {
        // Nothing else in this process reads the environment meanwhile.
        std::env::set_var(key.to_uppercase(), value);
    }
    let content = sparkwing_state::open_content(&format!("s3://{}/env", s3.bucket))
        .await
        .unwrap();
    // AWS_ALLOW_HTTP=true holds for the plain-HTTP endpoint (the client options must not
    // replace it).
    assert_eq!(content.blob_size(&"0".repeat(64)).await.unwrap(), None);
}
