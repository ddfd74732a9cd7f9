//! `POST /api/claude/auth/api-key` against the loopback mock of `/v1/models`: every validation
//! outcome, what is stored, and what is shown back.

use std::time::Duration;

use serde_json::json;

use crate::common::client::Api;
use crate::common::daemon::{assert_files_free_of, Daemon, TestEnv};
use crate::common::mock_api::{Behavior, MockApi};

const PW: &str = "correct horse battery";
const KEY: &str = "sk-ant-api03-VALIDkeyForTests0000000000000000000000000000000000000wxyz";

fn env_with(mock: &MockApi) -> TestEnv {
    let mut env = TestEnv::new();
    env.set("anthropic.base_url", mock.base_url());
    env.set("anthropic.validation_timeout", "1s");
    env
}

async fn alice(daemon: &Daemon) -> Api {
    Api::new(daemon.base_url()).user("alice", PW).await
}

#[tokio::test]
async fn a_valid_key_is_checked_stored_and_never_echoed() {
    let mock = MockApi::start();
    let env = env_with(&mock);
    let daemon = env.start();
    let alice = alice(&daemon).await;

    let status = alice.get("/api/claude/auth/status").await.expect(200);
    assert_eq!(status.body["authenticated"], false);

    let answer = alice.set_api_key(KEY).await.expect(200);
    assert_eq!(answer.body["authenticated"], true);
    assert_eq!(answer.body["authType"], "api_key");
    assert_eq!(answer.body["hint"], "sk-ant-…wxyz");
    assert_eq!(answer.body["needsReauth"], false);
    assert_eq!(answer.body["validation"], "ok");
    assert!(answer.body["validatedAt"].as_str().is_some());
    assert!(!answer.body.to_string().contains(KEY));

    let check = mock
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/models")
        .expect("key check");
    assert_eq!(check.api_key(), Some(KEY));
    assert_eq!(check.header("anthropic-version"), Some("2023-06-01"));

    let status = alice.get("/api/claude/auth/status").await.expect(200);
    assert_eq!(status.body["hint"], "sk-ant-…wxyz");
    assert!(!status.body.to_string().contains(KEY));

    alice.delete("/api/claude/auth").await.expect(204);
    assert_eq!(
        alice.get("/api/claude/auth/status").await.body["authenticated"],
        false
    );
    daemon.assert_logs_free_of(&[KEY, PW]);
}

#[tokio::test]
async fn rejected_keys_get_typed_errors_and_store_nothing() {
    let mock = MockApi::start();
    let env = env_with(&mock);
    let daemon = env.start();
    let alice = alice(&daemon).await;
    let cases = [
        (
            "sk-ant-api03-unauthorized-000000000001",
            Behavior::Status(401),
            400,
            "invalid_api_key",
        ),
        (
            "sk-ant-api03-forbidden-00000000000002",
            Behavior::Status(403),
            400,
            "api_key_forbidden",
        ),
        (
            "sk-ant-api03-servererror-000000000003",
            Behavior::Status(500),
            502,
            "validation_unavailable",
        ),
        (
            "sk-ant-api03-hangs-forever-0000000004",
            Behavior::Hang(Duration::from_secs(30)),
            502,
            "validation_unavailable",
        ),
    ];
    for (key, behavior, status, code) in cases {
        mock.set_models_behavior(key, behavior);
        alice.set_api_key(key).await.expect_error(status, code);
        let st = alice.get("/api/claude/auth/status").await.expect(200);
        assert_eq!(st.body["authenticated"], false, "{code}: nothing stored");
    }
    // A network error (nothing listens) is also validation_unavailable.
    drop(mock);
    alice
        .set_api_key(KEY)
        .await
        .expect_error(502, "validation_unavailable");
    assert_eq!(
        alice.get("/api/claude/auth/status").await.body["authType"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn a_failed_change_keeps_the_previous_key() {
    let mock = MockApi::start();
    let env = env_with(&mock);
    let daemon = env.start();
    let alice = alice(&daemon).await;
    alice.set_api_key(KEY).await.expect(200);
    let bad = "sk-ant-api03-unauthorized-000000000009";
    mock.set_models_behavior(bad, Behavior::Status(401));
    alice
        .set_api_key(bad)
        .await
        .expect_error(400, "invalid_api_key");
    assert_eq!(
        alice.get("/api/claude/auth/status").await.body["hint"],
        "sk-ant-…wxyz"
    );
}

#[tokio::test]
async fn rate_limited_and_overloaded_keys_are_real_and_stored() {
    let mock = MockApi::start();
    let env = env_with(&mock);
    let daemon = env.start();
    let alice = alice(&daemon).await;
    for (key, status) in [
        ("sk-ant-api03-ratelimited-00000000429a", 429),
        ("sk-ant-api03-overloaded-000000000529b", 529),
    ] {
        mock.set_models_behavior(key, Behavior::Status(status));
        let answer = alice.set_api_key(key).await.expect(200);
        assert_eq!(answer.body["authenticated"], true);
        assert_eq!(answer.body["validation"], "rate_limited", "{status}");
    }
}

#[tokio::test]
async fn malformed_keys_are_refused_before_any_network_call() {
    let mock = MockApi::start();
    let env = env_with(&mock);
    let daemon = env.start();
    let alice = alice(&daemon).await;
    let long = "k".repeat(513);
    for (key, needle) in [
        ("", "empty"),
        ("  \r\n", "empty"),
        ("sk-ant-api03 has spaces", "whitespace"),
        ("sk-ant-api03-\u{1}ctrl", "control"),
        ("sk-ant-oat01-an-oauth-token-000000000000", "OAuth token"),
        (long.as_str(), "512"),
    ] {
        let answer = alice
            .set_api_key(key)
            .await
            .expect_error(400, "malformed_api_key");
        let message = answer.body["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }
    alice
        .post("/api/claude/auth/api-key", json!({"key": KEY}))
        .await
        .expect_error(400, "invalid_json");
    assert!(
        mock.requests().iter().all(|r| r.path != "/v1/models"),
        "no key check was made"
    );
    assert_eq!(
        alice.get("/api/claude/auth/status").await.body["authenticated"],
        false
    );
}

#[tokio::test]
async fn a_pasted_key_with_a_line_ending_is_stored_trimmed_and_byte_exact() {
    let mock = MockApi::start();
    let env = env_with(&mock);
    let mut daemon = env.start();
    let alice = alice(&daemon).await;
    let answer = alice.set_api_key(&format!("  {KEY}\r\n")).await.expect(200);
    assert_eq!(answer.body["hint"], "sk-ant-…wxyz");
    let check = mock
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/models")
        .unwrap();
    assert_eq!(check.api_key(), Some(KEY), "the trimmed key was checked");
    assert_eq!(daemon.stop().code(), Some(0));

    // What was stored opens to exactly the trimmed key.
    let store = sashad::store::Store::open(&env.data_dir()).unwrap();
    let key = sashad::crypto::MasterKey::load(&env.data_dir().join("master.key")).unwrap();
    let keyring = sashad::crypto::Keyring::new(key);
    let user = store.user_by_name("alice").unwrap().unwrap();
    let record = store.credential(&user.id).unwrap().unwrap();
    let plain = keyring
        .open(&user.id, sashad::credential::SEAL_KIND, &record.sealed)
        .unwrap();
    let credential = sashad::credential::Credential::from_plaintext(&plain).unwrap();
    assert_eq!(
        credential,
        sashad::credential::Credential::ApiKey {
            key: KEY.to_owned()
        }
    );
    drop(store);
    assert_files_free_of(&env.data_dir(), &[KEY]);
}
