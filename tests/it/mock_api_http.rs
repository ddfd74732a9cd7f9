//! The mock Anthropic API's own contract, checked over HTTP: the key check, the error shapes,
//! per-credential behaviours, the SSE stream and its markers, and request recording. The real
//! CLI against the mock is in `mock_api_cli.rs`.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::mock_api::{Behavior, MockApi, StreamEnd};

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
