//! The mock Anthropic API's own contract, checked over HTTP: the key check, the error shapes,
//! per-credential behaviours, the SSE stream and its markers, request recording, and the OAuth
//! provider (PKCE, single-use codes, refresh rotation, paste mode, denial, client
//! authentication). The real CLI against the mock is in `mock_api_cli.rs`.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::mock_api::{
    new_pkce_verifier, pkce_challenge, AuthorizeOutcome, Behavior, ClientAuth, MockApi,
    OAuthConfig, StreamEnd, OAUTH_CLIENT_ID, OAUTH_DEFAULT_SCOPE, OAUTH_EXPIRED_MESSAGE,
    OAUTH_REVOKED_MESSAGE,
};

/// Upper bound on any single wait; a healthy run takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);
const KEY: &str = "sk-ant-api03-good";

fn models(mock: &MockApi, key: Option<&str>) -> reqwest::RequestBuilder {
    let req = reqwest::Client::new()
        .get(format!("{}/v1/models", mock.base_url()))
        .header("anthropic-version", "2023-06-01");
    match key {
        Some(key) => req.header("x-api-key", key),
        None => req,
    }
}

fn messages(mock: &MockApi, credential: &str, text: &str, stream: bool) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{}/v1/messages?beta=true", mock.base_url()))
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", credential)
        .json(&json!({
            "model": "claude-opus-5-5",
            "max_tokens": 1024,
            "stream": stream,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\nSLOW TOOL:no ECHO\n</system-reminder>\n"},
                {"type": "text", "text": text},
            ]}],
        }))
}

async fn error_type(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with(r#"{"type":"error","#),
        "type first, as the API: {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("error body is JSON");
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    (
        status,
        body["error"]["type"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Parses an SSE body into `(event name, data)` pairs.
fn parse_sse(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in frame.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    assert!(d.starts_with(r#"{"type":""#), "type first, as the API: {d}");
                    data = serde_json::from_str(d).expect("SSE data is JSON");
                }
            }
            assert_eq!(data["type"], name.as_str(), "event name matches data type");
            (name, data)
        })
        .collect()
}

fn streamed_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect()
}

#[tokio::test]
async fn key_check_accepts_anthropic_keys_and_rejects_others() {
    let mock = MockApi::start();

    let resp = models(&mock, Some(KEY)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"claude-opus-5-5"), "{body}");
    assert_eq!(body["has_more"], false);

    let resp = models(&mock, Some("not-a-key")).send().await.unwrap();
    assert_eq!(error_type(resp).await, (401, "authentication_error".into()));
    let resp = models(&mock, None).send().await.unwrap();
    assert_eq!(error_type(resp).await, (401, "authentication_error".into()));
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/models", mock.base_url()))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_type(resp).await,
        (400, "invalid_request_error".into())
    );

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[0].api_key(), Some(KEY));
    assert_eq!(reqs[0].header("Anthropic-Version"), Some("2023-06-01"));
    assert_eq!(reqs[1].status, Some(401));
}

#[tokio::test]
async fn key_check_behaviours_are_per_key() {
    let mock = MockApi::start();
    for (key, status, kind) in [
        ("sk-ant-401", 401, "authentication_error"),
        ("sk-ant-403", 403, "permission_error"),
        ("sk-ant-429", 429, "rate_limit_error"),
        ("sk-ant-500", 500, "api_error"),
        ("sk-ant-529", 529, "overloaded_error"),
    ] {
        mock.set_models_behavior(key, Behavior::Status(status));
        let resp = models(&mock, Some(key)).send().await.unwrap();
        if status == 429 {
            assert!(resp.headers().contains_key("retry-after"));
        }
        assert_eq!(error_type(resp).await, (status, kind.to_owned()), "{key}");
    }
    // Another key is not affected.
    assert_eq!(models(&mock, Some(KEY)).send().await.unwrap().status(), 200);

    // A hanging key makes a client's timeout fire; the mock saw the request arrive.
    mock.set_models_behavior("sk-ant-hang", Behavior::Hang(Duration::from_secs(30)));
    let err = models(&mock, Some("sk-ant-hang"))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    mock.wait_for(
        |r| r.iter().any(|r| r.api_key() == Some("sk-ant-hang")),
        WAIT,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn messages_stream_like_the_api_and_follow_markers() {
    let mock = MockApi::start();

    let resp = messages(&mock, KEY, "Hello", true).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = parse_sse(&resp.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert!(names.contains(&"ping"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert_eq!(streamed_text(&events), "Hello from the mock.");
    assert!(
        names
            .iter()
            .filter(|n| **n == "content_block_delta")
            .count()
            > 1,
        "several deltas"
    );
    assert_eq!(events[0].1["message"]["model"], "claude-opus-5-5");

    // TOOL: a tool_use block for Bash whose partial JSON joins into the command.
    let resp = messages(&mock, KEY, "TOOL:echo hi there", true)
        .send()
        .await
        .unwrap();
    let events = parse_sse(&resp.text().await.unwrap());
    let start = events
        .iter()
        .find(|(n, _)| n == "content_block_start")
        .unwrap();
    assert_eq!(start.1["content_block"]["type"], "tool_use");
    assert_eq!(start.1["content_block"]["name"], "Bash");
    let json: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    let input: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        input,
        json!({"command": "echo hi there", "description": "run"})
    );
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");

    // BIG: exactly n bytes of text.
    let resp = messages(&mock, KEY, "BIG:100000", true)
        .send()
        .await
        .unwrap();
    let events = parse_sse(&resp.text().await.unwrap());
    assert_eq!(streamed_text(&events).len(), 100_000);

    // Non-streaming: one JSON message.
    let resp = messages(&mock, KEY, "Hi", false).send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "Hello from the mock.");
    assert_eq!(body["stop_reason"], "end_turn");

    let reqs = mock.messages_requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(
        reqs[1].last_user_text().as_deref(),
        Some("TOOL:echo hi there")
    );
    assert_eq!(reqs[0].query, "beta=true");
}

#[tokio::test]
async fn tool_results_and_echo_read_the_conversation() {
    let mock = MockApi::start();
    let client = reqwest::Client::new();
    let send = |body: Value| {
        client
            .post(format!("{}/v1/messages", mock.base_url()))
            .header("anthropic-version", "2023-06-01")
            .bearer_auth("sk-ant-oat01-token")
            .json(&body)
            .send()
    };
    let resp = send(json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "TOOL:ls"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.txt"}]},
    ]}))
    .await
    .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "TOOL-RESULT: a.txt");

    let resp = send(json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "first ALPHA"},
        {"role": "system", "content": "environment"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "ECHO now"}]},
    ]}))
    .await
    .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["content"][0]["text"],
        r#"ECHO messages=4 earlier_user_turns=["first ALPHA"]"#
    );
    let reqs = mock.messages_requests();
    assert_eq!(reqs[0].bearer_token(), Some("sk-ant-oat01-token"));
    assert_eq!(reqs[0].api_key(), None);
    assert_eq!(reqs[1].user_texts(), vec!["first ALPHA", "ECHO now"]);
}

#[tokio::test]
async fn rejected_credentials_get_401_and_others_still_work() {
    let mock = MockApi::start();
    mock.reject_messages_for("sk-ant-revoked");
    let resp = messages(&mock, "sk-ant-revoked", "Hello", true)
        .send()
        .await
        .unwrap();
    assert_eq!(error_type(resp).await, (401, "authentication_error".into()));
    mock.set_messages_behavior(KEY, Behavior::Status(529));
    let resp = messages(&mock, KEY, "Hello", true).send().await.unwrap();
    assert_eq!(error_type(resp).await, (529, "overloaded_error".into()));
    let resp = messages(&mock, "sk-ant-other", "Hello", true)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_slow_stream_stops_when_the_client_goes_away() {
    let mock = MockApi::start();
    let mut resp = messages(&mock, KEY, "be SLOW", true).send().await.unwrap();
    let mut seen = String::new();
    while !seen.contains("w1 ") {
        let chunk = resp.chunk().await.unwrap().expect("stream still open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(resp);
    let reqs = mock
        .wait_for(|r| r.first().is_some_and(|r| r.stream_end.is_some()), WAIT)
        .await
        .unwrap();
    assert_eq!(reqs[0].stream_end, Some(StreamEnd::ClientGone));
}

#[test]
fn blocking_waits_work_without_a_runtime() {
    use std::io::{Read, Write};

    let mock = MockApi::start();
    mock.set_slow_pace(Duration::from_millis(1), 3);
    let addr = mock.addr();
    let client = std::thread::spawn(move || -> std::io::Result<String> {
        let body = r#"{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"SLOW"}]}"#;
        let mut conn = std::net::TcpStream::connect(addr)?;
        write!(
            conn,
            "POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\nanthropic-version: 2023-06-01\r\n\
             x-api-key: k\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        Ok(answer)
    });
    let reqs = mock
        .wait_for_blocking(|r| r.iter().any(|r| r.stream_end.is_some()), WAIT)
        .unwrap();
    assert_eq!(reqs[0].stream_end, Some(StreamEnd::Completed));
    let answer = client.join().unwrap().unwrap();
    for word in ["w0 ", "w1 ", "w2 "] {
        assert!(answer.contains(&format!(r#""text":"{word}""#)), "{answer}");
    }
    assert!(!answer.contains(r#""text":"w3 ""#), "{answer}");
}

#[tokio::test]
async fn dropping_the_mock_ends_open_streams_at_once() {
    let mock = MockApi::start();
    let base = mock.base_url();
    let mut resp = messages(&mock, KEY, "SLOW", true).send().await.unwrap();
    resp.chunk().await.unwrap().expect("the stream has begun");
    let started = std::time::Instant::now();
    drop(mock);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        started.elapsed()
    );
    // The stream is cut rather than finished, and nothing listens any more.
    let rest = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the open stream ended");
    let err = reqwest::get(format!("{base}/v1/models")).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
}

// ----- The OAuth provider -----

/// A client's callback; nothing listens there, and nothing needs to: the mock only redirects.
const CALLBACK: &str = "http://127.0.0.1:9/api/claude/auth/oauth/callback";

/// An authorization URL as a client builds it (RFC 6749 §4.1.1, RFC 7636 §4.3).
fn authorize_url(mock: &MockApi, redirect_uri: &str, state: &str, verifier: &str) -> String {
    let mut url = reqwest::Url::parse(&mock.authorize_url()).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", OAUTH_CLIENT_ID)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", OAUTH_DEFAULT_SCOPE)
        .append_pair("state", state)
        .append_pair("code_challenge", &pkce_challenge(verifier))
        .append_pair("code_challenge_method", "S256");
    url.into()
}

/// Authorizes in callback mode; returns the code and its verifier.
async fn code_for(mock: &MockApi, redirect_uri: &str) -> (String, String) {
    let verifier = new_pkce_verifier();
    let url = authorize_url(mock, redirect_uri, "st", &verifier);
    match mock.authorize(&url).await {
        AuthorizeOutcome::Redirect { code, .. } => (code, verifier),
        other => panic!("expected a redirect with a code, got {other:?}"),
    }
}

/// A token request from a public client, form-encoded.
async fn token(mock: &MockApi, params: &[(&str, &str)]) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(mock.token_url())
        .form(params)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn exchange(mock: &MockApi, code: &str, redirect_uri: &str, verifier: &str) -> (u16, Value) {
    token(
        mock,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", OAUTH_CLIENT_ID),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(mock: &MockApi, refresh_token: &str) -> (u16, Value) {
    token(
        mock,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", OAUTH_CLIENT_ID),
        ],
    )
    .await
}

/// Signs in through callback mode; returns the token answer.
async fn sign_in(mock: &MockApi) -> Value {
    let (code, verifier) = code_for(mock, CALLBACK).await;
    let (status, body) = exchange(mock, &code, CALLBACK, &verifier).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn str_of<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {body}"))
}

fn assert_oauth_error(answer: &(u16, Value), status: u16, error: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], error, "{}", answer.1);
    assert!(answer.1["error_description"].is_string(), "{}", answer.1);
}

/// `POST /v1/messages` with a bearer token; the status and the error message, if any.
async fn messages_with_token(mock: &MockApi, access_token: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages", mock.base_url()))
        .header("anthropic-version", "2023-06-01")
        .bearer_auth(access_token)
        .json(&json!({
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    (status, message.to_owned())
}

#[test]
fn pkce_challenge_matches_rfc_7636_appendix_b() {
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    let verifier = new_pkce_verifier();
    assert_eq!(verifier.len(), 43);
    assert_ne!(verifier, new_pkce_verifier());
}

#[tokio::test]
async fn the_code_flow_with_pkce_issues_tokens_the_messages_api_accepts() {
    let mock = MockApi::start();
    let verifier = new_pkce_verifier();
    let url = authorize_url(&mock, &format!("{CALLBACK}?keep=1"), "st-1", &verifier);
    let AuthorizeOutcome::Redirect {
        location,
        code,
        state,
    } = mock.authorize(&url).await
    else {
        panic!("expected a redirect");
    };
    // The redirect URI's own query is kept (RFC 6749 §3.1.2).
    assert!(
        location.starts_with(&format!("{CALLBACK}?keep=1&code=")),
        "{location}"
    );
    assert_eq!(state.as_deref(), Some("st-1"));
    let authorized = mock.authorize_requests();
    assert_eq!(authorized.len(), 1);
    assert_eq!(authorized[0].param("code_challenge_method"), Some("S256"));
    assert_eq!(authorized[0].param("state"), Some("st-1"));
    assert_eq!(authorized[0].code.as_deref(), Some(code.as_str()));

    let resp = reqwest::Client::new()
        .post(mock.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", &format!("{CALLBACK}?keep=1")),
            ("client_id", OAUTH_CLIENT_ID),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], OAUTH_DEFAULT_SCOPE);
    let access = str_of(&body, "access_token");
    assert!(access.starts_with("sk-ant-oat01-"), "{access}");
    assert!(str_of(&body, "refresh_token").starts_with("sk-ant-ort01-"));

    assert_eq!(messages_with_token(&mock, access).await.0, 200);
    assert_eq!(mock.issued_access_tokens(), vec![access.to_owned()]);
    let calls = mock.token_requests();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].is_code_exchange() && calls[0].succeeded());
    assert_eq!(calls[0].client_auth, ClientAuth::ClientId);
    assert_eq!(calls[0].client_id.as_deref(), Some(OAUTH_CLIENT_ID));
    assert_eq!(calls[0].access_token(), Some(access));
}

#[tokio::test]
async fn a_wrong_verifier_is_invalid_grant_and_spends_the_code() {
    let mock = MockApi::start();
    let (code, verifier) = code_for(&mock, CALLBACK).await;
    let wrong = new_pkce_verifier();
    assert_oauth_error(
        &exchange(&mock, &code, CALLBACK, &wrong).await,
        400,
        "invalid_grant",
    );
    // One attempt per code: the right verifier comes too late.
    assert_oauth_error(
        &exchange(&mock, &code, CALLBACK, &verifier).await,
        400,
        "invalid_grant",
    );
    // A verifier that could never be one is a malformed request, and leaves the code alone.
    let (code, verifier) = code_for(&mock, CALLBACK).await;
    assert_oauth_error(
        &exchange(&mock, &code, CALLBACK, "too-short").await,
        400,
        "invalid_request",
    );
    assert_eq!(exchange(&mock, &code, CALLBACK, &verifier).await.0, 200);
    let errors: Vec<Option<String>> = mock
        .token_requests()
        .iter()
        .map(|t| t.error().map(str::to_owned))
        .collect();
    assert_eq!(
        errors,
        [
            Some("invalid_grant".to_owned()),
            Some("invalid_grant".to_owned()),
            Some("invalid_request".to_owned()),
            None
        ]
    );
}

#[tokio::test]
async fn a_code_is_single_use_and_its_reuse_revokes_its_tokens() {
    let mock = MockApi::start();
    let (code, verifier) = code_for(&mock, CALLBACK).await;
    let (status, body) = exchange(&mock, &code, CALLBACK, &verifier).await;
    assert_eq!(status, 200);
    let answer = exchange(&mock, &code, CALLBACK, &verifier).await;
    assert_oauth_error(&answer, 400, "invalid_grant");
    // RFC 6749 §4.1.2: the tokens issued with a code presented twice are revoked.
    assert_oauth_error(
        &refresh(&mock, str_of(&body, "refresh_token")).await,
        400,
        "invalid_grant",
    );
    assert_eq!(
        messages_with_token(&mock, str_of(&body, "access_token")).await,
        (401, OAUTH_REVOKED_MESSAGE.to_owned())
    );
    assert_oauth_error(
        &exchange(&mock, "mock-code-unknown", CALLBACK, &verifier).await,
        400,
        "invalid_grant",
    );
}

#[tokio::test]
async fn the_redirect_uri_must_match_and_codes_expire() {
    let mock = MockApi::start();
    let (code, verifier) = code_for(&mock, CALLBACK).await;
    let elsewhere = "http://127.0.0.1:9/elsewhere";
    assert_oauth_error(
        &exchange(&mock, &code, elsewhere, &verifier).await,
        400,
        "invalid_grant",
    );
    let (code, _) = code_for(&mock, CALLBACK).await;
    let no_redirect = token(
        &mock,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", OAUTH_CLIENT_ID),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_oauth_error(&no_redirect, 400, "invalid_request");

    mock.set_oauth_config(OAuthConfig {
        code_ttl: Duration::ZERO,
        ..OAuthConfig::default()
    });
    let (code, verifier) = code_for(&mock, CALLBACK).await;
    let (status, body) = exchange(&mock, &code, CALLBACK, &verifier).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        str_of(&body, "error_description").contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token_and_refuses_the_old_one() {
    let mock = MockApi::start();
    let first = sign_in(&mock).await;
    let old = str_of(&first, "refresh_token");

    let (status, second) = refresh(&mock, old).await;
    assert_eq!(status, 200, "{second}");
    let new = str_of(&second, "refresh_token");
    assert_ne!(new, old);
    assert_ne!(
        str_of(&second, "access_token"),
        str_of(&first, "access_token")
    );
    assert_eq!(second["scope"], OAUTH_DEFAULT_SCOPE);
    assert_oauth_error(&refresh(&mock, old).await, 400, "invalid_grant");

    // A narrower scope may be asked for; a wider one may not (RFC 6749 §6).
    let (status, third) = token(
        &mock,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", new),
            ("client_id", OAUTH_CLIENT_ID),
            ("scope", "user:inference"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["scope"], "user:inference");
    let newest = str_of(&third, "refresh_token");
    let wider = token(
        &mock,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", newest),
            ("client_id", OAUTH_CLIENT_ID),
            ("scope", "user:inference org:admin"),
        ],
    )
    .await;
    assert_oauth_error(&wider, 400, "invalid_scope");

    let refreshes: Vec<(bool, Option<String>)> = mock
        .token_requests()
        .iter()
        .filter(|t| t.is_refresh())
        .map(|t| (t.succeeded(), t.error().map(str::to_owned)))
        .collect();
    assert_eq!(
        refreshes,
        [
            (true, None),
            (false, Some("invalid_grant".to_owned())),
            (true, None),
            (false, Some("invalid_scope".to_owned())),
        ]
    );
    assert_eq!(mock.issued_access_tokens().len(), 3);

    // Revoked: the live refresh token is refused too; a new sign-in works again.
    mock.revoke_refresh_tokens();
    assert_oauth_error(&refresh(&mock, newest).await, 400, "invalid_grant");
    let again = sign_in(&mock).await;
    assert_eq!(refresh(&mock, str_of(&again, "refresh_token")).await.0, 200);
}

#[tokio::test]
async fn refresh_without_rotation_and_revoking_one_sign_in() {
    let mock = MockApi::start();
    mock.set_oauth_config(OAuthConfig {
        rotate_refresh_tokens: false,
        ..OAuthConfig::default()
    });
    let one = sign_in(&mock).await;
    let two = sign_in(&mock).await;
    let one_refresh = str_of(&one, "refresh_token");
    for _ in 0..2 {
        let (status, body) = refresh(&mock, one_refresh).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("refresh_token").is_none(), "{body}");
    }
    assert!(mock.revoke_refresh_token(one_refresh));
    assert!(!mock.revoke_refresh_token("sk-ant-ort01-never-issued"));
    assert_oauth_error(&refresh(&mock, one_refresh).await, 400, "invalid_grant");
    assert_eq!(refresh(&mock, str_of(&two, "refresh_token")).await.0, 200);
}

#[tokio::test]
async fn paste_mode_shows_code_and_state_on_the_providers_page() {
    let mock = MockApi::start();
    let paste = mock.paste_redirect_uri();
    assert_eq!(paste, format!("{}/oauth/code", mock.base_url()));
    let verifier = new_pkce_verifier();
    let url = authorize_url(&mock, &paste, "st<&>", &verifier);

    // A browser follows the redirect to the provider's page, which escapes what it shows.
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(r#"<pre id="code">mock-code-"#), "{page}");
    assert!(page.contains("#st&lt;&amp;&gt;</pre>"), "{page}");

    let AuthorizeOutcome::PasteCode(shown) = mock.authorize(&url).await else {
        panic!("expected a code to paste");
    };
    let (code, state) = shown.split_once('#').unwrap();
    assert_eq!(state, "st<&>");
    assert_eq!(exchange(&mock, code, &paste, &verifier).await.0, 200);
}

#[tokio::test]
async fn a_denied_authorization_reports_the_error_on_the_redirect() {
    let mock = MockApi::start();
    let script = "<script>alert('x')</script> & more";
    mock.set_oauth_config(OAuthConfig {
        deny_authorize: true,
        error_description: script.to_owned(),
        ..OAuthConfig::default()
    });
    let verifier = new_pkce_verifier();
    let outcome = mock
        .authorize(&authorize_url(&mock, CALLBACK, "st-9", &verifier))
        .await;
    let AuthorizeOutcome::Error {
        location,
        error,
        description,
        state,
    } = outcome
    else {
        panic!("expected an error redirect, got {outcome:?}");
    };
    assert!(location.starts_with(&format!("{CALLBACK}?error=access_denied&")));
    assert_eq!(error, "access_denied");
    assert_eq!(description.as_deref(), Some(script));
    assert_eq!(state.as_deref(), Some("st-9"));
    let authorized = mock.authorize_requests();
    assert_eq!(authorized[0].error.as_deref(), Some("access_denied"));
    assert_eq!(authorized[0].code, None);

    // In paste mode the provider's own page shows the error, escaped.
    let url = authorize_url(&mock, &mock.paste_redirect_uri(), "st", &verifier);
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 400);
    let page = page.text().await.unwrap();
    assert!(page.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2F;script&gt; &amp; more"));
    assert!(!page.contains("<script>"), "{page}");
}

#[tokio::test]
async fn bad_authorization_requests_are_refused_where_rfc_6749_says() {
    let mock = MockApi::start();
    let verifier = new_pkce_verifier();
    let good = authorize_url(&mock, CALLBACK, "st", &verifier);
    let with = |name: &str, value: Option<&str>| {
        let mut url = reqwest::Url::parse(&good).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .filter(|(n, _)| n != name)
            .collect();
        let mut query = url.query_pairs_mut();
        query.clear();
        for (n, v) in &pairs {
            query.append_pair(n, v);
        }
        if let Some(value) = value {
            query.append_pair(name, value);
        }
        drop(query);
        url.to_string()
    };

    // Client or redirect URI not to be trusted: a page, never a redirect.
    for url in [
        with("client_id", Some("someone-else")),
        with("client_id", None),
        with("redirect_uri", None),
        with("redirect_uri", Some("/relative/callback")),
        with("redirect_uri", Some("http://127.0.0.1:9/cb#fragment")),
    ] {
        match mock.authorize(&url).await {
            AuthorizeOutcome::Refused { status: 400, body } => {
                assert!(body.contains(r#"<p id="error">"#), "{body}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    mock.set_oauth_config(OAuthConfig {
        redirect_uris: vec!["http://127.0.0.1:9/registered".to_owned()],
        ..OAuthConfig::default()
    });
    assert!(matches!(
        mock.authorize(&good).await,
        AuthorizeOutcome::Refused { status: 400, .. }
    ));
    mock.set_oauth_config(OAuthConfig::default());

    // Anything else: an error on the redirect, with the state.
    for (url, expected) in [
        (with("code_challenge", None), "invalid_request"),
        (
            with("code_challenge_method", Some("plain")),
            "invalid_request",
        ),
        (with("code_challenge_method", None), "invalid_request"),
        (with("code_challenge", Some("short")), "invalid_request"),
        (
            with("response_type", Some("token")),
            "unsupported_response_type",
        ),
        (with("scope", Some("bad\"scope")), "invalid_scope"),
        (format!("{good}&state=twice"), "invalid_request"),
    ] {
        match mock.authorize(&url).await {
            AuthorizeOutcome::Error { error, state, .. } => {
                assert_eq!(error, expected, "{url}");
                assert!(state.is_some(), "{url}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    assert!(mock.authorize_requests().iter().all(|a| a.code.is_none()));
}

#[tokio::test]
async fn the_token_endpoint_authenticates_confidential_clients() {
    use base64::Engine as _;
    let mock = MockApi::start();
    let secret = "p@ss word+/";
    mock.set_oauth_config(OAuthConfig {
        client_secret: Some(secret.to_owned()),
        ..OAuthConfig::default()
    });
    let client = reqwest::Client::new();
    // RFC 6749 §2.3.1: the id and secret are form-encoded before Basic's base64.
    let basic = |id: &str, secret: &str| {
        let encode = |s: &str| -> String {
            let mut url = reqwest::Url::parse("http://x/").unwrap();
            url.query_pairs_mut().append_pair("v", s);
            url.query().unwrap()[2..].to_owned()
        };
        let pair = format!("{}:{}", encode(id), encode(secret));
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let post = |auth: Option<String>, params: Vec<(&'static str, String)>| {
        let mut req = client.post(mock.token_url()).form(&params);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let challenge = resp.headers().contains_key("www-authenticate");
            let body: Value = resp.json().await.unwrap();
            (status, body, challenge)
        }
    };
    let code_params = |code: &str, verifier: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", CALLBACK.to_owned()),
            ("code_verifier", verifier.to_owned()),
        ]
    };

    // Basic with the right secret.
    let (code, verifier) = code_for(&mock, CALLBACK).await;
    let (status, body, _) = post(
        Some(basic(OAUTH_CLIENT_ID, secret)),
        code_params(&code, &verifier),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The secret in the body.
    let (code, verifier) = code_for(&mock, CALLBACK).await;
    let mut params = code_params(&code, &verifier);
    params.push(("client_id", OAUTH_CLIENT_ID.to_owned()));
    params.push(("client_secret", secret.to_owned()));
    let (status, body, _) = post(None, params).await;
    assert_eq!(status, 200, "{body}");

    // No secret, a wrong one, another client: 401 invalid_client with a challenge.
    let (code, verifier) = code_for(&mock, CALLBACK).await;
    let mut public = code_params(&code, &verifier);
    public.push(("client_id", OAUTH_CLIENT_ID.to_owned()));
    for (auth, params) in [
        (None, public.clone()),
        (
            Some(basic(OAUTH_CLIENT_ID, "wrong")),
            code_params(&code, &verifier),
        ),
        (
            Some(basic("someone-else", secret)),
            code_params(&code, &verifier),
        ),
    ] {
        let (status, body, challenge) = post(auth, params).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
        assert!(challenge);
    }
    // The code was not spent on failed client authentication.
    let (status, body, _) = post(
        Some(basic(OAUTH_CLIENT_ID, secret)),
        code_params(&code, &verifier),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Basic and a body secret at once.
    let mut both = code_params(&code, &verifier);
    both.push(("client_secret", secret.to_owned()));
    let (status, body, _) = post(Some(basic(OAUTH_CLIENT_ID, secret)), both).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    let auths: Vec<ClientAuth> = mock
        .token_requests()
        .iter()
        .map(|t| t.client_auth)
        .collect();
    assert_eq!(
        auths,
        [
            ClientAuth::Basic,
            ClientAuth::BodySecret,
            ClientAuth::ClientId,
            ClientAuth::Basic,
            ClientAuth::Basic,
            ClientAuth::Basic,
            ClientAuth::Basic,
        ]
    );
}

#[tokio::test]
async fn the_token_endpoint_refuses_malformed_requests() {
    let mock = MockApi::start();
    let answer = token(
        &mock,
        &[("grant_type", "password"), ("client_id", OAUTH_CLIENT_ID)],
    )
    .await;
    assert_oauth_error(&answer, 400, "unsupported_grant_type");
    let answer = token(&mock, &[("client_id", OAUTH_CLIENT_ID)]).await;
    assert_oauth_error(&answer, 400, "invalid_request");
    let answer = token(&mock, &[("grant_type", "refresh_token")]).await;
    assert_oauth_error(&answer, 401, "invalid_client");
    let answer = token(
        &mock,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", OAUTH_CLIENT_ID),
        ],
    )
    .await;
    assert_oauth_error(&answer, 400, "invalid_request");

    // JSON is not what RFC 6749 §4.1.3 specifies.
    let resp = reqwest::Client::new()
        .post(mock.token_url())
        .json(&json!({
            "grant_type": "refresh_token",
            "refresh_token": "x",
            "client_id": OAUTH_CLIENT_ID,
        }))
        .send()
        .await
        .unwrap();
    let answer = (resp.status().as_u16(), resp.json().await.unwrap());
    assert_oauth_error(&answer, 400, "invalid_request");

    // An outage, whatever the request.
    mock.set_oauth_config(OAuthConfig {
        token_endpoint_status: Some(503),
        ..OAuthConfig::default()
    });
    let answer = token(&mock, &[("grant_type", "refresh_token")]).await;
    assert_oauth_error(&answer, 503, "server_error");
    assert_eq!(mock.token_requests().len(), 6);
    assert!(mock.token_requests().iter().all(|t| !t.succeeded()));
}

#[tokio::test]
async fn issued_access_tokens_expire_on_the_messages_api() {
    let mock = MockApi::start();
    // Any other bearer token is still accepted, as before.
    assert_eq!(
        messages_with_token(&mock, "sk-ant-oat01-anything").await.0,
        200
    );

    mock.set_oauth_config(OAuthConfig {
        access_token_ttl: Duration::ZERO,
        ..OAuthConfig::default()
    });
    let body = sign_in(&mock).await;
    assert_eq!(body["expires_in"], 0);
    assert_eq!(
        messages_with_token(&mock, str_of(&body, "access_token")).await,
        (401, OAUTH_EXPIRED_MESSAGE.to_owned())
    );

    mock.set_oauth_config(OAuthConfig::default());
    let (status, fresh) = refresh(&mock, str_of(&body, "refresh_token")).await;
    assert_eq!(status, 200);
    let access = str_of(&fresh, "access_token");
    assert_eq!(messages_with_token(&mock, access).await.0, 200);
    assert!(mock.expire_access_token(access));
    assert!(!mock.expire_access_token("sk-ant-oat01-never-issued"));
    assert_eq!(
        messages_with_token(&mock, access).await,
        (401, OAUTH_EXPIRED_MESSAGE.to_owned())
    );
    // A behaviour set for the token wins over the provider's view of it.
    mock.set_messages_behavior(access, Behavior::Ok);
    assert_eq!(messages_with_token(&mock, access).await.0, 200);

    let other = sign_in(&mock).await;
    mock.expire_access_tokens();
    assert_eq!(
        messages_with_token(&mock, str_of(&other, "access_token"))
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn a_slow_refresh_is_recorded_and_rotated_on_arrival() {
    let mock = MockApi::start();
    let body = sign_in(&mock).await;
    let old = str_of(&body, "refresh_token").to_owned();

    // Held back far longer than the test runs: it is abandoned at the end.
    mock.set_oauth_config(OAuthConfig {
        refresh_delay: Duration::from_secs(600),
        ..OAuthConfig::default()
    });
    let token_url = mock.token_url();
    let held_token = old.clone();
    let held = tokio::spawn(async move {
        reqwest::Client::new()
            .post(token_url)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", held_token.as_str()),
                ("client_id", OAUTH_CLIENT_ID),
            ])
            .send()
            .await
    });
    let calls = mock.wait_for_token_requests(2, WAIT).await.unwrap();
    assert!(calls[1].is_refresh() && calls[1].succeeded());
    assert!(!held.is_finished(), "the answer is still held back");
    assert_eq!(mock.requests().last().unwrap().status, None);

    // The old token was rotated on arrival: a second refresh with it fails at once.
    mock.set_oauth_config(OAuthConfig::default());
    assert_oauth_error(&refresh(&mock, &old).await, 400, "invalid_grant");
    held.abort();
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_are_one_success_and_invalid_grants() {
    let mock = MockApi::start();
    let body = sign_in(&mock).await;
    let token = str_of(&body, "refresh_token");
    let delay = Duration::from_millis(200);
    mock.set_oauth_config(OAuthConfig {
        refresh_delay: delay,
        ..OAuthConfig::default()
    });
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(refresh(&mock, token), refresh(&mock, token));
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400]);
    let refreshes: Vec<bool> = mock
        .token_requests()
        .iter()
        .filter(|t| t.is_refresh())
        .map(|t| t.succeeded())
        .collect();
    assert_eq!(refreshes, [true, false]);
}
