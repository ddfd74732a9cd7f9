//! Credentials beyond API keys that need no sign-in flow: setup tokens (behind the
//! subscription setting), Bedrock, Vertex and Foundry. Each is checked for shape, stored
//! sealed, shown with a safe hint, and handed to the owner's child through its environment
//! (read back from `/proc/<pid>/environ`).

use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};

use crate::common::client::Api;
use crate::common::daemon::{assert_files_free_of, TestEnv};
use crate::common::mock_api::MockApi;

const SETUP_TOKEN: &str = "sk-ant-oat01-SetupTokenForTests_0123456789abcdefghijklmnopqrstuvwxyz";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";
const FOUNDRY_KEY: &str = "foundry-key-SECRET-0123456789abcdef";

fn private_key() -> String {
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC-SECRET-\n-----END PRIVATE KEY-----\n".into()
}

fn service_account() -> Value {
    json!({
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": "abc123",
        "private_key": private_key(),
        "client_email": "runner@demo-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token"
    })
}

#[tokio::test]
async fn with_subscription_login_off_only_keys_and_cloud_providers_work() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_fake_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user("alice", "correct horse battery")
        .await;
    alice
        .post(
            "/api/claude/auth/setup-token",
            json!({"token": SETUP_TOKEN}),
        )
        .await
        .expect_error(403, "subscription_login_disabled");
    alice
        .post("/api/claude/auth/oauth/initiate", json!({}))
        .await
        .expect_error(403, "subscription_login_disabled");
    alice
        .post("/api/claude/auth/oauth/code", json!({"code": "abc#def"}))
        .await
        .expect_error(403, "subscription_login_disabled");
    alice
        .get("/api/claude/auth/oauth/status/some-state")
        .await
        .expect_error(403, "subscription_login_disabled");
    let callback = alice
        .get("/api/claude/auth/oauth/callback?code=x&state=y")
        .await;
    assert_eq!(callback.status.as_u16(), 403);
    let status = alice.get("/api/claude/auth/status").await.expect(200);
    assert_eq!(status.body["methods"]["oauth"], false);
    assert_eq!(status.body["methods"]["setupToken"], false);
    assert_eq!(status.body["methods"]["bedrock"], true);

    alice
        .set_api_key("sk-ant-api03-StillWorks000000000000000000000000000000000000000001")
        .await
        .expect(200);
    let bedrock =
        json!({"region": "us-east-1", "bearerToken": "ABSKQmVkcm9ja0FQSUtleS1exampleSECRET"});
    let answer = alice
        .post("/api/claude/auth/bedrock", bedrock)
        .await
        .expect(200);
    assert_eq!(answer.body["authType"], "bedrock");
}

#[tokio::test]
async fn a_setup_token_reaches_the_child_as_an_oauth_token() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("claude_auth.subscription_login", true);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user("alice", "correct horse battery")
        .await;
    alice
        .post(
            "/api/claude/auth/setup-token",
            json!({"token": "sk-ant-api03-not-a-setup-token-000000"}),
        )
        .await
        .expect_error(400, "malformed_token");
    let answer = alice
        .post(
            "/api/claude/auth/setup-token",
            json!({"token": format!(" {SETUP_TOKEN}\n")}),
        )
        .await
        .expect(200);
    assert_eq!(answer.body["authType"], "setup_token");
    assert_eq!(answer.body["hint"], "sk-ant-…wxyz");
    assert!(!answer.body.to_string().contains(SETUP_TOKEN));
    let environ = alice.child_env_after_turn("demo").await;
    assert!(
        environ.contains(&format!("CLAUDE_CODE_OAUTH_TOKEN={SETUP_TOKEN}")),
        "{environ:?}"
    );
    assert!(!environ.iter().any(|v| v.starts_with("ANTHROPIC_API_KEY=")));
    daemon.assert_logs_free_of(&[SETUP_TOKEN]);
    drop(daemon);
    assert_files_free_of(&env.data_dir().join("store-v1"), &[SETUP_TOKEN]);
}

#[tokio::test]
async fn bedrock_keys_and_foundry_map_to_the_cli_variables() {
    let mock = MockApi::start();
    let mut env = TestEnv::new().with_fake_cli(&mock);
    env.set("auth.registration", "open");
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    let alice = api.user("alice", "correct horse battery").await;
    let bob = api.user("bob", "correct horse battery").await;

    alice
        .post(
            "/api/claude/auth/bedrock",
            json!({"region": "mars-1", "bearerToken": "x".repeat(20)}),
        )
        .await
        .expect_error(400, "invalid_bedrock");
    alice
        .post(
            "/api/claude/auth/bedrock",
            json!({"region": "us-east-1", "accessKeyId": "AKIAIOSFODNN7EXAMPLE"}),
        )
        .await
        .expect_error(400, "invalid_bedrock");
    let answer = alice
        .post(
            "/api/claude/auth/bedrock",
            json!({"region": "us-west-2", "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": AWS_SECRET,
                   "sessionToken": "FwoGZXIvYXdzEBYaDSESSIONTOKEN0123456789"}),
        )
        .await
        .expect(200);
    assert_eq!(answer.body["hint"], "AKIA…MPLE (us-west-2)");
    let environ = alice.child_env_after_turn("demo").await;
    for var in [
        "CLAUDE_CODE_USE_BEDROCK=1".to_owned(),
        "AWS_REGION=us-west-2".to_owned(),
        "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE".to_owned(),
        format!("AWS_SECRET_ACCESS_KEY={AWS_SECRET}"),
        "AWS_SESSION_TOKEN=FwoGZXIvYXdzEBYaDSESSIONTOKEN0123456789".to_owned(),
    ] {
        assert!(environ.contains(&var), "{var} missing from {environ:?}");
    }

    bob.post("/api/claude/auth/foundry", json!({"apiKey": FOUNDRY_KEY}))
        .await
        .expect_error(400, "invalid_foundry");
    bob.post(
        "/api/claude/auth/foundry",
        json!({"resource": "my-foundry", "apiKey": FOUNDRY_KEY}),
    )
    .await
    .expect(200);
    let environ = bob.child_env_after_turn("demo").await;
    for var in [
        "CLAUDE_CODE_USE_FOUNDRY=1".to_owned(),
        "ANTHROPIC_FOUNDRY_RESOURCE=my-foundry".to_owned(),
        format!("ANTHROPIC_FOUNDRY_API_KEY={FOUNDRY_KEY}"),
    ] {
        assert!(environ.contains(&var), "{var} missing from {environ:?}");
    }
    assert!(
        !environ.iter().any(|v| v.contains(AWS_SECRET)),
        "alice's secret in bob's child"
    );
    daemon.assert_logs_free_of(&[AWS_SECRET, FOUNDRY_KEY]);
}

#[tokio::test]
async fn vertex_writes_a_private_credentials_file_and_removes_it_on_disconnect() {
    let mock = MockApi::start();
    let env = TestEnv::new().with_fake_cli(&mock);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url())
        .user("alice", "correct horse battery")
        .await;
    let me = alice.get("/api/auth/me").await.body;
    let user_id = me["id"].as_str().unwrap().to_owned();

    let mut bad = service_account();
    bad.as_object_mut().unwrap().remove("client_email");
    alice
        .post(
            "/api/claude/auth/vertex",
            json!({"projectId": "demo-project", "region": "us-east5", "serviceAccountJson": bad}),
        )
        .await
        .expect_error(400, "invalid_vertex");
    alice
        .post("/api/claude/auth/vertex", json!({"projectId": "demo-project", "region": "us-east5", "serviceAccountJson": "{not json"}))
        .await
        .expect_error(400, "invalid_vertex");
    let answer = alice
        .post(
            "/api/claude/auth/vertex",
            json!({"projectId": "demo-project", "region": "us-east5", "serviceAccountJson": service_account().to_string()}),
        )
        .await
        .expect(200);
    assert_eq!(
        answer.body["hint"],
        "runner@demo-project.iam.gserviceaccount.com (demo-project, us-east5)"
    );
    let environ = alice.child_env_after_turn("demo").await;
    let file = env.data_dir().join(format!(
        "workspace/users/{user_id}/.config/sashad/vertex-service-account.json"
    ));
    for var in [
        "CLAUDE_CODE_USE_VERTEX=1".to_owned(),
        "CLOUD_ML_REGION=us-east5".to_owned(),
        "ANTHROPIC_VERTEX_PROJECT_ID=demo-project".to_owned(),
        format!("GOOGLE_APPLICATION_CREDENTIALS={}", file.display()),
    ] {
        assert!(environ.contains(&var), "{var} missing from {environ:?}");
    }
    let meta = std::fs::metadata(&file).expect("the service-account file is written");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let written: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        written["client_email"],
        "runner@demo-project.iam.gserviceaccount.com"
    );

    alice.delete("/api/claude/auth").await.expect(204);
    assert!(!file.exists(), "the file goes with the credential");
    daemon.assert_logs_free_of(&["-SECRET-"]);
    drop(daemon);
    assert_files_free_of(&env.data_dir().join("store-v1"), &["-SECRET-"]);
}
