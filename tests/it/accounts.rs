//! Accounts over HTTP: first-user admin, registration policy, login, logout, rate limits,
//! disabled users, and the Origin rule for cookie-authenticated writes.

use reqwest::Method;
use serde_json::json;

use crate::common::client::Api;
use crate::common::daemon::TestEnv;

const PW: &str = "correct horse battery";

#[tokio::test]
async fn first_user_is_admin_then_registration_closes() {
    let env = TestEnv::new();
    let daemon = env.start();
    let api = Api::new(daemon.base_url());

    let info = api.get("/api/info").await.expect(200);
    assert_eq!(info.body["firstUser"], true);
    assert_eq!(info.body["registrationOpen"], true);

    let alice = api.register("alice", PW).await.expect(201);
    assert_eq!(alice.body["role"], "admin");
    assert!(alice.body.get("passwordHash").is_none() && alice.body.get("password_hash").is_none());

    let info = api.get("/api/info").await.expect(200);
    assert_eq!(info.body["firstUser"], false);
    assert_eq!(info.body["registrationOpen"], false);

    api.register("bob", PW)
        .await
        .expect_error(403, "registration_closed");

    // An admin can always create users, with the same endpoint.
    let admin = api.user("alice", PW).await;
    let bob = admin.register("bob", PW).await.expect(201);
    assert_eq!(bob.body["role"], "user");
    admin
        .register("BOB", PW)
        .await
        .expect_error(409, "username_taken");

    // A non-admin cannot.
    let bob = api.user("bob", PW).await;
    bob.register("carol", PW)
        .await
        .expect_error(403, "registration_closed");
    daemon.assert_logs_free_of(&[PW]);
}

#[tokio::test]
async fn bad_registrations_get_typed_errors() {
    let env = TestEnv::new();
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    api.register("../etc", PW)
        .await
        .expect_error(400, "invalid_username");
    api.register("alice", "short")
        .await
        .expect_error(400, "invalid_password");
    api.post("/api/auth/register", json!({"username": "alice"}))
        .await
        .expect_error(400, "invalid_json");
    api.send_with(Method::POST, "/api/auth/register", None, |r| {
        r.body("{not json")
            .header("content-type", "application/json")
    })
    .await
    .expect_error(400, "invalid_json");
    let big = "x".repeat(100 * 1024);
    api.post(
        "/api/auth/register",
        json!({"username": "alice", "password": big}),
    )
    .await
    .expect_error(413, "payload_too_large");
    api.get("/api/nope").await.expect_error(404, "not_found");
    // Nothing was created by any of that.
    assert_eq!(api.get("/api/info").await.body["firstUser"], true);
}

#[tokio::test]
async fn login_logout_and_wrong_password() {
    let env = TestEnv::new();
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    api.register("alice", PW).await.expect(201);

    api.login("alice", "wrong password")
        .await
        .expect_error(401, "invalid_credentials");
    api.login("nobody", PW)
        .await
        .expect_error(401, "invalid_credentials");

    let login = api.login("Alice", PW).await.expect(200);
    let token = login.body["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43, "256 bits in base64url");
    let cookie = login
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("sashad_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    let me = api.with_token(&token);
    assert_eq!(
        me.get("/api/auth/me").await.expect(200).body["username"],
        "alice"
    );
    me.post("/api/auth/logout", json!({})).await.expect(204);
    me.get("/api/auth/me")
        .await
        .expect_error(401, "unauthenticated");
    api.get("/api/auth/me")
        .await
        .expect_error(401, "unauthenticated");
    daemon.assert_logs_free_of(&[PW, &token]);
}

#[tokio::test]
async fn login_is_rate_limited_per_username() {
    let mut env = TestEnv::new();
    env.set("auth.login_attempts_per_username", 3);
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    api.register("alice", PW).await.expect(201);
    for _ in 0..3 {
        api.login("alice", "wrong password")
            .await
            .expect_error(401, "invalid_credentials");
    }
    let limited = api
        .login("alice", PW)
        .await
        .expect_error(429, "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Another username from the same address is not limited by alice's failures.
    api.login("bob", PW)
        .await
        .expect_error(401, "invalid_credentials");
}

#[tokio::test]
async fn login_is_rate_limited_per_address() {
    let mut env = TestEnv::new();
    env.set("auth.login_attempts_per_ip", 4);
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    for i in 0..4 {
        api.login(&format!("user{i}"), PW)
            .await
            .expect_error(401, "invalid_credentials");
    }
    api.login("someone-else", PW)
        .await
        .expect_error(429, "rate_limited");
}

#[tokio::test]
async fn a_disabled_user_is_refused_and_their_tokens_stop_working() {
    let env = TestEnv::new();
    let mut daemon = env.start();
    let api = Api::new(daemon.base_url());
    let admin = api.user("alice", PW).await;
    admin.register("bob", PW).await.expect(201);
    let bob = api.user("bob", PW).await;
    bob.get("/api/auth/me").await.expect(200);
    assert_eq!(daemon.stop().code(), Some(0));

    let out = env.run(&["user", "disable", "bob"], "");
    assert!(out.status.success(), "{out:?}");

    let daemon = env.start();
    let bob = bob.with_token(bob.token.as_deref().unwrap());
    let bob = crate::common::client::Api {
        base: daemon.base_url(),
        ..bob
    };
    bob.get("/api/auth/me")
        .await
        .expect_error(401, "unauthenticated");
    Api::new(daemon.base_url())
        .login("bob", PW)
        .await
        .expect_error(401, "account_disabled");
}

#[tokio::test]
async fn cookie_writes_need_an_allowed_origin() {
    let env = TestEnv::new();
    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    let login = {
        api.register("alice", PW).await.expect(201);
        api.login("alice", PW).await.expect(200)
    };
    let token = login.body["token"].as_str().unwrap().to_owned();
    let cookie = format!("sashad_session={token}");
    let with_cookie = |origin: Option<&str>| {
        let cookie = cookie.clone();
        let origin = origin.map(str::to_owned);
        move |r: reqwest::RequestBuilder| {
            let r = r.header("cookie", cookie);
            match origin {
                Some(o) => r.header("origin", o),
                None => r,
            }
        }
    };
    // A cookie read needs no Origin.
    api.send_with(Method::GET, "/api/auth/me", None, with_cookie(None))
        .await
        .expect(200);
    // A cookie write from another site, or with no Origin, is refused, and changes nothing.
    api.send_with(
        Method::DELETE,
        "/api/claude/auth",
        None,
        with_cookie(Some("https://evil.example")),
    )
    .await
    .expect_error(403, "origin_not_allowed");
    api.send_with(
        Method::POST,
        "/api/auth/logout",
        Some(json!({})),
        with_cookie(None),
    )
    .await
    .expect_error(403, "origin_not_allowed");
    api.send_with(Method::GET, "/api/auth/me", None, with_cookie(None))
        .await
        .expect(200);
    // From the daemon's own origin it works.
    api.send_with(
        Method::POST,
        "/api/auth/logout",
        Some(json!({})),
        with_cookie(Some(&daemon.origin())),
    )
    .await
    .expect(204);
    api.send_with(Method::GET, "/api/auth/me", None, with_cookie(None))
        .await
        .expect_error(401, "unauthenticated");
    // Bearer writes need no Origin.
    let bearer = api.user("alice", PW).await;
    bearer.post("/api/auth/logout", json!({})).await.expect(204);
}

#[tokio::test]
async fn operators_add_and_list_users_offline() {
    let mut env = TestEnv::new();
    env.set("auth.registration", "admin-only");
    let out = env.run(&["user", "add", "root", "--admin"], &format!("{PW}\n"));
    assert!(out.status.success(), "{out:?}");
    let out = env.run(&["user", "add", "carol"], &format!("{PW}\n"));
    assert!(out.status.success(), "{out:?}");
    let out = env.run(&["user", "list"], "");
    assert!(
        out.stdout.contains("root") && out.stdout.contains("admin"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("carol") && out.stdout.contains("user"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(PW) && !out.stderr.contains(PW));

    let daemon = env.start();
    let api = Api::new(daemon.base_url());
    api.register("dave", PW)
        .await
        .expect_error(403, "registration_closed");
    let root = api.user("root", PW).await;
    assert_eq!(root.get("/api/auth/me").await.body["role"], "admin");
    root.register("dave", PW).await.expect(201);
    // While the daemon runs, operator commands say the database is in use.
    let out = env.run(&["user", "list"], "");
    assert!(!out.status.success());
    assert!(out.stderr.contains("database in use"), "{}", out.stderr);
}
