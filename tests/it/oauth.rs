//! Claude account sign-in against the loopback mock OAuth provider (authorization code with
//! PKCE, RFC 6749 §4.1 and RFC 7636; refresh with rotation, RFC 6749 §6): both redirect modes
//! down to a child that holds the access token, refused states, a wrong verifier, single-flight
//! refresh, `invalid_grant`, a 401 mid-turn, the callback page's escaping, and log hygiene.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::client::Api;
use crate::common::daemon::{process_cmdline, process_environ, TestEnv};
use crate::common::mock_api::{AuthorizeOutcome, MockApi, OAuthConfig};
use crate::common::ws::{assistant_text, is_result, Connect};

const PW: &str = "correct horse battery";

/// A daemon with subscription sign-in on, pointed at the mock as API and OAuth provider.
fn env_for(mock: &MockApi, paste: bool) -> TestEnv {
    let mut env = TestEnv::new().with_fake_cli(mock);
    env.set("claude_auth.subscription_login", true);
    env.set("auth.registration", "open");
    env.set("oauth.authorize_url", mock.authorize_url());
    env.set("oauth.token_url", mock.token_url());
    env.set("oauth.client_id", mock.oauth_client_id());
    env.set(
        "oauth.scopes",
        toml::Value::Array(vec!["user:inference".into()]),
    );
    if paste {
        env.set("oauth.redirect_mode", "paste");
        env.set("oauth.redirect_uri", mock.paste_redirect_uri());
    }
    env
}

/// Starts a sign-in and plays the browser at the provider; returns the state and the outcome.
async fn authorize(user: &Api, mock: &MockApi) -> (String, AuthorizeOutcome) {
    let started = user
        .post("/api/claude/auth/oauth/initiate", json!({}))
        .await
        .expect(200);
    let url = started.body["authUrl"].as_str().unwrap().to_owned();
    let state = started.body["state"].as_str().unwrap().to_owned();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(!url.contains("code_verifier"), "{url}");
    (state, mock.authorize(&url).await)
}

/// Follows a callback redirect to the daemon, as the browser would (no cookie: SameSite=Strict
/// cookies do not ride a cross-site redirect). Returns status and page.
async fn follow(location: &str) -> (u16, String) {
    let response = reqwest::get(location).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Signs `user` in with callback mode; returns the access token the provider issued.
async fn sign_in(user: &Api, mock: &MockApi) -> String {
    let (state, outcome) = authorize(user, mock).await;
    let AuthorizeOutcome::Redirect { location, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let (status, page) = follow(&location).await;
    assert_eq!(status, 200, "{page}");
    let status = user
        .get(&format!("/api/claude/auth/oauth/status/{state}"))
        .await
        .expect(200);
    assert_eq!(status.body["status"], "completed");
    mock.token_requests()
        .iter()
        .rev()
        .find_map(|r| r.access_token().map(str::to_owned))
        .unwrap()
}

#[tokio::test]
async fn callback_mode_signs_in_and_the_child_gets_the_access_token() {
    let mock = MockApi::start();
    let env = env_for(&mock, false);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url()).user("alice", PW).await;
    let (state, outcome) = authorize(&alice, &mock).await;
    let AuthorizeOutcome::Redirect {
        location,
        state: echoed,
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(echoed.as_deref(), Some(state.as_str()));
    assert!(
        location.starts_with(&format!(
            "{}/api/claude/auth/oauth/callback?",
            daemon.base_url()
        )),
        "{location}"
    );
    let pending = alice
        .get(&format!("/api/claude/auth/oauth/status/{state}"))
        .await
        .expect(200);
    assert_eq!(pending.body["status"], "pending");

    let (status, page) = follow(&location).await;
    assert_eq!(status, 200);
    assert!(page.contains("Signed in"), "{page}");
    let exchange = mock
        .token_requests()
        .into_iter()
        .find(|r| r.is_code_exchange())
        .unwrap();
    assert!(exchange.succeeded(), "{exchange:?}");
    assert!(exchange
        .param("code_verifier")
        .is_some_and(|v| v.len() >= 43));
    let access_token = exchange.access_token().unwrap().to_owned();

    let done = alice
        .get(&format!("/api/claude/auth/oauth/status/{state}"))
        .await
        .expect(200);
    assert_eq!(done.body["status"], "completed");
    let status = alice.get("/api/claude/auth/status").await.expect(200);
    assert_eq!(status.body["authType"], "oauth");
    assert_eq!(status.body["authenticated"], true);
    assert!(status.body["expiresAt"].as_str().is_some());
    assert!(!status.body.to_string().contains(&access_token));

    let environ = alice.child_env_after_turn("demo").await;
    assert!(
        environ.contains(&format!("CLAUDE_CODE_OAUTH_TOKEN={access_token}")),
        "{environ:?}"
    );
    assert!(!environ.iter().any(|v| v.starts_with("ANTHROPIC_API_KEY=")));
}

#[tokio::test]
async fn paste_mode_signs_in_with_code_hash_state() {
    let mock = MockApi::start();
    let env = env_for(&mock, true);
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    let alice = api.user("alice", PW).await;
    let bob = api.user("bob", PW).await;
    let (state, outcome) = authorize(&alice, &mock).await;
    let AuthorizeOutcome::PasteCode(pasted) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(pasted.ends_with(&format!("#{state}")));

    // Another user cannot use it, and their attempt does not burn it.
    bob.post("/api/claude/auth/oauth/code", json!({"code": pasted}))
        .await
        .expect_error(400, "unknown_state");
    bob.get(&format!("/api/claude/auth/oauth/status/{state}"))
        .await
        .expect_error(404, "not_found");
    assert_eq!(
        bob.get("/api/claude/auth/status").await.body["authenticated"],
        false
    );
    alice
        .post(
            "/api/claude/auth/oauth/code",
            json!({"code": "no-hash-here"}),
        )
        .await
        .expect_error(400, "malformed_code");

    let answer = alice
        .post(
            "/api/claude/auth/oauth/code",
            json!({"code": format!("  {pasted}\n")}),
        )
        .await
        .expect(200);
    assert_eq!(answer.body["authType"], "oauth");
    let access_token = mock
        .token_requests()
        .into_iter()
        .find_map(|r| r.access_token().map(str::to_owned))
        .unwrap();
    let environ = alice.child_env_after_turn("demo").await;
    assert!(environ.contains(&format!("CLAUDE_CODE_OAUTH_TOKEN={access_token}")));

    // The same code#state again: the state is used.
    alice
        .post("/api/claude/auth/oauth/code", json!({"code": pasted}))
        .await
        .expect_error(400, "state_used");
}

#[tokio::test]
async fn replayed_expired_foreign_and_missing_states_are_refused_and_store_nothing() {
    let mock = MockApi::start();
    let mut env = env_for(&mock, false);
    env.set("oauth.state_ttl", "1s");
    let daemon = env.start();
    let alice = Api::new(daemon.base_url()).user("alice", PW).await;

    // Missing or unknown state.
    let base = daemon.base_url();
    let (status, page) = follow(&format!("{base}/api/claude/auth/oauth/callback?code=abc")).await;
    assert_eq!(status, 400);
    assert!(page.contains("no state"), "{page}");
    let (status, page) = follow(&format!(
        "{base}/api/claude/auth/oauth/callback?code=abc&state=nope"
    ))
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("unknown"), "{page}");
    alice
        .get("/api/claude/auth/oauth/status/nope")
        .await
        .expect_error(404, "not_found");

    // Expired: the state outlives its 1 s ttl before the code comes back.
    let (state, outcome) = authorize(&alice, &mock).await;
    let AuthorizeOutcome::Redirect { location, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = alice
            .get(&format!("/api/claude/auth/oauth/status/{state}"))
            .await
            .expect(200);
        if status.body["status"] == "expired" {
            break;
        }
        assert!(Instant::now() < deadline, "never expired: {}", status.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, page) = follow(&location).await;
    assert_eq!(status, 400);
    assert!(page.contains("expired"), "{page}");
    assert!(
        mock.token_requests().is_empty(),
        "no exchange for an expired state"
    );
    assert_eq!(
        alice.get("/api/claude/auth/status").await.body["authenticated"],
        false
    );

    // Replayed: the first use completes, the second is refused.
    drop(daemon);
    let daemon = {
        let mut e = env;
        e.set("oauth.state_ttl", "10m");
        e.start()
    };
    let alice = Api {
        base: daemon.base_url(),
        ..alice
    };
    let (_, outcome) = authorize(&alice, &mock).await;
    let AuthorizeOutcome::Redirect { location, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(follow(&location).await.0, 200);
    let (status, page) = follow(&location).await;
    assert_eq!(status, 400);
    assert!(page.contains("already used"), "{page}");
    assert_eq!(
        mock.token_requests()
            .iter()
            .filter(|r| r.is_code_exchange())
            .count(),
        1
    );
}

#[tokio::test]
async fn a_wrong_verifier_is_refused_by_the_provider_and_reported() {
    let mock = MockApi::start();
    let env = env_for(&mock, false);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url()).user("alice", PW).await;
    let started = alice
        .post("/api/claude/auth/oauth/initiate", json!({}))
        .await
        .expect(200);
    let state = started.body["state"].as_str().unwrap().to_owned();
    // Swap the challenge for another verifier's: the provider will refuse sashad's verifier.
    let url = started.body["authUrl"].as_str().unwrap();
    let other =
        crate::common::mock_api::pkce_challenge(&crate::common::mock_api::new_pkce_verifier());
    let url = regex_replace_challenge(url, &other);
    let AuthorizeOutcome::Redirect { location, .. } = mock.authorize(&url).await else {
        panic!()
    };
    let (status, page) = follow(&location).await;
    assert_eq!(status, 400);
    assert!(page.contains("invalid_grant"), "{page}");
    let exchange = mock
        .token_requests()
        .into_iter()
        .find(|r| r.is_code_exchange())
        .unwrap();
    assert_eq!(exchange.error(), Some("invalid_grant"));
    let status = alice
        .get(&format!("/api/claude/auth/oauth/status/{state}"))
        .await
        .expect(200);
    assert_eq!(status.body["status"], "failed");
    assert!(status.body["reason"]
        .as_str()
        .unwrap()
        .contains("invalid_grant"));
    assert_eq!(
        alice.get("/api/claude/auth/status").await.body["authenticated"],
        false
    );
}

fn regex_replace_challenge(url: &str, challenge: &str) -> String {
    let (head, tail) = url.split_once("code_challenge=").unwrap();
    let rest = tail
        .split_once('&')
        .map(|(_, r)| format!("&{r}"))
        .unwrap_or_default();
    format!("{head}code_challenge={challenge}{rest}")
}

#[tokio::test]
async fn the_callback_page_escapes_what_the_provider_sent() {
    let mock = MockApi::start();
    let env = env_for(&mock, false);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url()).user("alice", PW).await;
    mock.set_oauth_config(OAuthConfig {
        deny_authorize: true,
        error_description: "<script>alert('pwned')</script>".into(),
        ..OAuthConfig::default()
    });
    let (state, outcome) = authorize(&alice, &mock).await;
    let AuthorizeOutcome::Error { location, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let response = reqwest::get(&location).await.unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let page = response.text().await.unwrap();
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;&#x2F;script&gt;"),
        "{page}"
    );
    let status = alice
        .get(&format!("/api/claude/auth/oauth/status/{state}"))
        .await
        .expect(200);
    assert_eq!(status.body["status"], "failed");

    // Reflected input on an unknown state is escaped too.
    let base = daemon.base_url();
    let (status, page) = follow(&format!(
        "{base}/api/claude/auth/oauth/callback?state=x&error=%3Cimg%20src%3Dx%3E"
    ))
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(!page.contains("<img") && page.contains("&lt;img"), "{page}");
}

#[tokio::test]
async fn two_sessions_needing_a_refresh_make_exactly_one_request() {
    let mock = MockApi::start();
    // Tokens live 90 s; with a 2 m margin every spawn finds them expiring and refreshes.
    mock.set_oauth_config(OAuthConfig {
        access_token_ttl: Duration::from_secs(90),
        refresh_delay: Duration::from_millis(500),
        ..OAuthConfig::default()
    });
    let mut env = env_for(&mock, false);
    env.set("oauth.refresh_margin", "2m");
    let daemon = env.start();
    let alice = Api::new(daemon.base_url()).user("alice", PW).await;
    let first_token = sign_in(&alice, &mock).await;
    let one = alice.new_session("one").await;
    let two = alice.new_session("two").await;
    let token = alice.token.clone().unwrap();
    let mut ws1 = Connect::bearer(&daemon.base_url(), &one, &token)
        .open()
        .await;
    let mut ws2 = Connect::bearer(&daemon.base_url(), &two, &token)
        .open()
        .await;
    // Both children start at once, and both find the token about to expire.
    tokio::join!(ws1.say("Hello one"), ws2.say("Hello two"));
    tokio::join!(ws1.until_result(), ws2.until_result());
    let refreshes: Vec<_> = mock
        .token_requests()
        .into_iter()
        .filter(|r| r.is_refresh())
        .collect();
    assert_eq!(refreshes.len(), 1, "{refreshes:?}");
    let fresh = refreshes[0].access_token().expect("refreshed").to_owned();
    assert_ne!(fresh, first_token);
    for session in [&one, &two] {
        let pid = alice.session(session).await["pid"].as_u64().unwrap() as u32;
        assert!(
            process_environ(pid).contains(&format!("CLAUDE_CODE_OAUTH_TOKEN={fresh}")),
            "{session}"
        );
    }
}

#[tokio::test]
async fn invalid_grant_keeps_the_credential_and_marks_it_for_reauth() {
    let mock = MockApi::start();
    mock.set_oauth_config(OAuthConfig {
        access_token_ttl: Duration::from_secs(60),
        ..OAuthConfig::default()
    });
    let env = env_for(&mock, false);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url()).user("alice", PW).await;
    sign_in(&alice, &mock).await;
    let before = alice.get("/api/claude/auth/status").await.expect(200).body;
    mock.revoke_refresh_tokens();
    let session = alice.new_session("demo").await;
    let answer = alice
        .post(
            &format!("/api/sessions/{session}/messages"),
            json!({"content": "Hello"}),
        )
        .await
        .expect_error(409, "credentials_expired");
    assert!(answer.body["message"]
        .as_str()
        .unwrap()
        .contains("sign in again"));
    let refresh = mock
        .token_requests()
        .into_iter()
        .find(|r| r.is_refresh())
        .unwrap();
    assert_eq!(refresh.error(), Some("invalid_grant"));
    let after = alice.get("/api/claude/auth/status").await.expect(200).body;
    assert_eq!(after["authType"], "oauth", "the credential is kept");
    assert_eq!(after["hint"], before["hint"]);
    assert_eq!(after["needsReauth"], true);
    assert_eq!(after["authenticated"], false);
}

#[tokio::test]
async fn a_401_mid_turn_refreshes_once_and_resumes_the_conversation() {
    let mock = MockApi::start();
    let mut env = env_for(&mock, false).with_real_cli(&mock);
    env.set("claude_auth.subscription_login", true);
    let daemon = env.start();
    let alice = Api::new(daemon.base_url()).user("alice", PW).await;
    let first_token = sign_in(&alice, &mock).await;
    let session = alice.new_session("demo").await;
    let mut ws = alice.socket(&session).await;
    ws.say("remember KIWI").await;
    ws.until_result().await;
    let first_pid = alice.session(&session).await["pid"].as_u64().unwrap() as u32;

    // The provider revokes the access token: the next turn meets a 401.
    mock.expire_access_token(&first_token);
    ws.say("ECHO what was the fruit").await;
    let done = ws
        .until(Duration::from_secs(60), |f| {
            is_result(f) && f["event"]["is_error"] == false
        })
        .await;
    assert_eq!(done["event"]["subtype"], "success");
    assert!(
        assistant_text(&ws.frames).contains("KIWI"),
        "resumed with the earlier turn"
    );
    let refreshes = mock
        .token_requests()
        .into_iter()
        .filter(|r| r.is_refresh())
        .count();
    assert_eq!(refreshes, 1);
    let fresh = mock.issued_access_tokens().last().unwrap().clone();
    let last = mock.messages_requests().pop().unwrap();
    assert_eq!(last.bearer_token(), Some(fresh.as_str()));
    let pid = alice.session(&session).await["pid"].as_u64().unwrap() as u32;
    assert_ne!(pid, first_pid, "a new child with the new token");
    assert!(process_cmdline(pid)
        .iter()
        .any(|a| a.starts_with("--resume=")));
    assert!(!ws
        .frames
        .iter()
        .any(|f| f["type"] == "error" && f["error"] == "credentials_expired"));
}

#[tokio::test]
async fn no_token_code_or_verifier_reaches_the_logs() {
    let mock = MockApi::start();
    let mut env = env_for(&mock, false);
    env.set("log.level", "trace");
    let mut daemon = env.start();
    let alice = Api::new(daemon.base_url()).user("alice", PW).await;
    sign_in(&alice, &mock).await;
    let _ = alice.child_env_after_turn("demo").await;
    assert_eq!(daemon.stop().code(), Some(0));
    let logs = daemon.logs.text();
    let mut secrets: Vec<String> = Vec::new();
    let mut states: Vec<String> = Vec::new();
    for request in mock.token_requests() {
        for key in ["code", "code_verifier", "refresh_token"] {
            if let Some(v) = request.param(key) {
                secrets.push(v.to_owned());
            }
        }
        if let Some(t) = request.access_token() {
            secrets.push(t.to_owned());
        }
        if let Some(t) = request.refresh_token() {
            secrets.push(t.to_owned());
        }
    }
    for request in mock.authorize_requests() {
        if let Some(state) = request.params.get("state") {
            states.push(state.clone());
        }
    }
    assert!(secrets.len() >= 4 && !states.is_empty(), "{secrets:?}");
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    // On disk, a state is the key of its sign-in record (it is single-use and was in the
    // provider's URL anyway); codes, verifiers and tokens never are.
    crate::common::daemon::assert_files_free_of(&env.data_dir().join("store-v1"), &refs);
    let all: Vec<&str> = refs
        .iter()
        .copied()
        .chain(states.iter().map(String::as_str))
        .collect();
    crate::common::daemon::assert_text_free_of("the daemon's logs", &logs, &all);
}

#[tokio::test]
async fn a_sign_in_under_way_survives_a_daemon_restart() {
    let mock = MockApi::start();
    let mut env = env_for(&mock, false);
    let mut daemon = env.start();
    // The redirect URI names the daemon's address: the restarted daemon listens there too.
    env.set("server.listen", daemon.addr.to_string());
    let alice = Api::new(daemon.base_url()).user("alice", PW).await;
    let (state, outcome) = authorize(&alice, &mock).await;
    let AuthorizeOutcome::Redirect { location, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(daemon.stop().code(), Some(0));

    // The state and the sealed verifier are in sled, so the new daemon finishes the sign-in.
    let daemon = env.start();
    assert_eq!(daemon.base_url(), alice.base);
    let (status, page) = follow(&location).await;
    assert_eq!(status, 200, "{page}");
    let done = alice
        .get(&format!("/api/claude/auth/oauth/status/{state}"))
        .await
        .expect(200);
    assert_eq!(done.body["status"], "completed");
    assert_eq!(
        alice.get("/api/claude/auth/status").await.body["authType"],
        "oauth"
    );
}
