//! The store across restarts: the same key opens credentials, a different key is a clear
//! startup error that destroys nothing, `rotate-key` moves everything to a new key, and a second
//! daemon on the same data directory exits non-zero.

use crate::common::client::Api;
use crate::common::daemon::{assert_files_free_of, TestEnv};
use crate::common::mock_api::MockApi;

const PW: &str = "correct horse battery";
const KEY: &str = "sk-ant-api03-RESTARTkey000000000000000000000000000000000000000000abcd";

fn env_with(mock: &MockApi) -> TestEnv {
    let mut env = TestEnv::new();
    env.set("anthropic.base_url", mock.base_url());
    env
}

/// Whether alice's credential opens in a fresh daemon: the status only reads the record, so
/// this opens the store directly with the key file.
fn credential_opens(env: &TestEnv, key_file: &std::path::Path) -> bool {
    let store = sashad::store::Store::open(&env.data_dir()).unwrap();
    let keyring = sashad::crypto::Keyring::new(sashad::crypto::MasterKey::load(key_file).unwrap());
    let user = store.user_by_name("alice").unwrap().unwrap();
    let record = store.credential(&user.id).unwrap().unwrap();
    keyring
        .open(&user.id, sashad::credential::SEAL_KIND, &record.sealed)
        .is_ok()
}

#[tokio::test]
async fn restart_with_the_same_key_keeps_everything() {
    let mock = MockApi::start();
    let mut env = env_with(&mock);
    env.master_key_file = Some(env.key_file("key-a"));
    let mut daemon = env.start();
    let alice = Api::new(daemon.base_url()).user("alice", PW).await;
    alice.set_api_key(KEY).await.expect(200);
    assert_eq!(daemon.stop().code(), Some(0));

    let daemon = env.start();
    let alice = Api {
        base: daemon.base_url(),
        ..alice
    };
    let status = alice.get("/api/claude/auth/status").await.expect(200);
    assert_eq!(
        status.body["hint"], "sk-ant-…abcd",
        "the login token and credential survived"
    );
    drop(daemon);
    assert!(credential_opens(
        &env,
        env.master_key_file.as_ref().unwrap()
    ));
    assert!(
        !env.data_dir().join("master.key").exists(),
        "no key generated when one is given"
    );
    assert_files_free_of(&env.data_dir(), &[KEY, PW]);
}

#[tokio::test]
async fn a_different_key_is_a_clear_error_and_destroys_nothing() {
    let mock = MockApi::start();
    let mut env = env_with(&mock);
    let original = env.key_file("key-a");
    env.master_key_file = Some(original.clone());
    let mut daemon = env.start();
    let alice = Api::new(daemon.base_url()).user("alice", PW).await;
    alice.set_api_key(KEY).await.expect(200);
    assert_eq!(daemon.stop().code(), Some(0));

    env.master_key_file = Some(env.key_file("key-b"));
    let (status, output) = env
        .try_start()
        .err()
        .expect("must not start with another key");
    assert_ne!(status.and_then(|s| s.code()), Some(0));
    assert!(output.contains("sealed with master key id"), "{output}");
    assert!(output.contains("original key"), "{output}");

    // Without any key, the daemon must not invent one over existing data either.
    env.master_key_file = None;
    let (_, output) = env
        .try_start()
        .err()
        .expect("must not start without the key");
    assert!(output.contains("no master key"), "{output}");
    assert!(!env.data_dir().join("master.key").exists());

    env.master_key_file = Some(original.clone());
    let daemon = env.start();
    let alice = Api {
        base: daemon.base_url(),
        ..alice
    };
    assert_eq!(
        alice.get("/api/claude/auth/status").await.body["hint"],
        "sk-ant-…abcd"
    );
    drop(daemon);
    assert!(credential_opens(&env, &original));
}

#[tokio::test]
async fn rotate_key_then_restart_with_only_the_new_key() {
    let mock = MockApi::start();
    let mut env = env_with(&mock);
    let old = env.key_file("key-old");
    env.master_key_file = Some(old.clone());
    let mut daemon = env.start();
    let api = Api::new(daemon.base_url());
    let alice = api.user("alice", PW).await;
    alice.set_api_key(KEY).await.expect(200);
    alice.register("bob", PW).await.expect(201);
    let bob = api.user("bob", PW).await;
    bob.set_api_key("sk-ant-api03-BOBkey0000000000000000000000000000000000000000000000bbbb")
        .await
        .expect(200);
    assert_eq!(daemon.stop().code(), Some(0));

    let new = env.key_file("key-new");
    let out = env.run(&["rotate-key", "--new-key-file", new.to_str().unwrap()], "");
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("re-sealed 2 record(s)"),
        "{}",
        out.stdout
    );

    assert!(
        !credential_opens(&env, &old),
        "the old key no longer opens anything"
    );
    assert!(credential_opens(&env, &new));

    env.master_key_file = Some(new);
    let daemon = env.start();
    let alice = Api {
        base: daemon.base_url(),
        ..alice
    };
    assert_eq!(
        alice.get("/api/claude/auth/status").await.body["hint"],
        "sk-ant-…abcd"
    );

    // The old key is now refused at startup.
    drop(daemon);
    env.master_key_file = Some(old);
    let (_, output) = env.try_start().err().expect("old key refused");
    assert!(output.contains("sealed with master key id"), "{output}");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_data_directory_exits_non_zero() {
    let env = TestEnv::new();
    let _first = env.start();
    let (status, output) = env.try_start().err().expect("second daemon must not start");
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{output}");
    assert!(output.contains("database in use"), "{output}");
}

#[tokio::test]
async fn bad_key_files_stop_startup_with_a_fix() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = TestEnv::new();
    let key = env.key_file("loose");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.master_key_file = Some(key.clone());
    let (_, output) = env.try_start().err().expect("world-readable key refused");
    assert!(output.contains("chmod 600"), "{output}");

    std::fs::write(&key, "too short").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, output) = env.try_start().err().expect("short key refused");
    assert!(
        output.contains("wrong length") && output.contains("openssl rand -hex 32"),
        "{output}"
    );
}

#[tokio::test]
async fn a_generated_key_is_0600_and_the_data_dir_0700() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let daemon = env.start();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.data_dir().join("master.key")), 0o600);
    assert_eq!(mode(&env.data_dir()), 0o700);
    assert!(daemon.logs.text().contains("generated a new master key"));
}

#[tokio::test]
async fn invalid_config_is_refused_with_the_key_named() {
    let mut env = TestEnv::new();
    env.set("limits.live_kids", 3);
    let out = env.run(&["config", "check"], "");
    assert!(!out.status.success());
    assert!(out.stderr.contains("live_kids"), "{}", out.stderr);

    let mut env = TestEnv::new();
    env.env
        .push(("SASHAD__SESSIONS__IDLE_TIMEOUT".into(), "2m".into()));
    let out = env.run(&["config", "check"], "");
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("idle_timeout = \"2m\""),
        "{}",
        out.stdout
    );
}
