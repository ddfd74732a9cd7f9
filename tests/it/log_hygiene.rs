//! Every flow of the setup API at debug level, then a scan of the daemon's logs and of every
//! file under the data directory for the secrets it handled.

use serde_json::json;

use crate::common::client::Api;
use crate::common::daemon::{assert_files_free_of, assert_text_free_of, TestEnv};
use crate::common::mock_api::{Behavior, MockApi};

#[tokio::test]
async fn no_secret_reaches_the_logs_or_the_disk_in_plaintext() {
    let mock = MockApi::start();
    let mut env = TestEnv::new();
    env.set("anthropic.base_url", mock.base_url());
    env.set("log.level", "trace");
    let mut daemon = env.start();
    let api = Api::new(daemon.base_url());
    let password = "pw-SECRET-8c1f2e9a";
    let key = "sk-ant-api03-SECRETkeyForHygiene000000000000000000000000000000000000zz";
    let bad_key = "sk-ant-api03-SECRETbadKey000000000000000000000000000000000000000yy";
    let oauth_like = "sk-ant-oat01-SECRETpastedToken0000000000000000000000000000xx";
    mock.set_models_behavior(bad_key, Behavior::Status(401));

    api.register("alice", password).await.expect(201);
    api.login("alice", "pw-SECRET-wrong-guess")
        .await
        .expect(401);
    let login = api.login("alice", password).await.expect(200);
    let token = login.body["token"].as_str().unwrap().to_owned();
    let alice = api.with_token(&token);
    alice.set_api_key(bad_key).await.expect(400);
    alice.set_api_key(oauth_like).await.expect(400);
    alice.set_api_key(key).await.expect(200);
    alice.get("/api/claude/auth/status").await.expect(200);
    alice
        .post(
            "/api/auth/register",
            json!({"username": "bob", "password": password}),
        )
        .await
        .expect(201);
    alice.post("/api/auth/logout", json!({})).await.expect(204);
    assert_eq!(daemon.stop().code(), Some(0));

    let secrets = [
        password,
        "pw-SECRET-wrong-guess",
        key,
        bad_key,
        oauth_like,
        token.as_str(),
    ];
    let logs = daemon.logs.text();
    assert!(logs.lines().count() > 10, "trace logging produced output");
    assert_text_free_of("the daemon's logs", &logs, &secrets);
    assert_files_free_of(&env.data_dir(), &secrets);
}
