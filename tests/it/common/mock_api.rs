//! A loopback mock of the Anthropic API, for the tests and for `make demo`.
//!
//! [`MockApi::start`] runs an actix-web server on `127.0.0.1:0` in a thread of its own, with its
//! own actix `System`, so any test can use it whatever runtime the test runs on (a plain `#[test]`,
//! `#[tokio::test]` or `#[actix_web::test]`). It stops when the [`MockApi`] is dropped.
//!
//! # Endpoints
//!
//! - `GET /v1/models` (and `/v1/models/{id}`): the key check sashad makes before it stores an API
//!   key. It needs `x-api-key` and `anthropic-version: 2023-06-01`. Any key that starts with
//!   `sk-ant-` is valid; anything else gets 401 `authentication_error`. A test can make one key
//!   answer 401, 403, 429, 500, 529, or hang ([`MockApi::set_models_behavior`]).
//! - `POST /v1/messages`: the Messages API. Streaming requests get SSE shaped like the real API's
//!   (`message_start`, `ping`, `content_block_start`, `content_block_delta` with `text_delta` or
//!   `input_json_delta`, `content_block_stop`, `message_delta`, `message_stop`); others get one
//!   JSON message. It takes `x-api-key` or `Authorization: Bearer` (OAuth and setup tokens) and
//!   accepts any credential unless a test says otherwise ([`MockApi::reject_messages_for`],
//!   [`MockApi::set_messages_behavior`]). The reply is scripted by markers in the text of the last
//!   `user` message; see [`Reply`] and the "Markers" section below.
//! - `POST /v1/messages/count_tokens`: a rough count, in case a client asks.
//! - `HEAD|GET /api/hello`: the CLI's connectivity probe (sent only when nonessential traffic is
//!   allowed); 200.
//! - Anything else: 404 `not_found_error`, recorded like every other request, so a test can see
//!   that a client called something unexpected. OAuth authorize and token endpoints (issue
//!   "Claude sign-in") belong in `routes`, next to the others, with their state in `Inner`.
//!
//! # Markers (in the last `user` message's text, `<system-reminder>` blocks left out)
//!
//! | marker | reply |
//! |---|---|
//! | none | `Hello from the mock.` in four text deltas |
//! | `TOOL:<shell command>` | a `tool_use` block for `Bash`, input `{"command": <cmd>, "description": "run"}` |
//! | (a `tool_result` in the last user message) | `TOOL-RESULT: <the tool result's text>` |
//! | `BIG:<n>` | `n` bytes of text (capped at [`BIG_MAX`]) in deltas of [`BIG_DELTA`] bytes: a CLI stdout line longer than `n` |
//! | `SLOW` | words `w0 `, `w1 `, … one per [`SLOW_WORD_INTERVAL`], [`SLOW_WORDS`] in all; the stream stops as soon as the client goes away |
//! | `ECHO` | `ECHO messages=<n> earlier_user_turns=<JSON array of the earlier user turns' text>` |
//!
//! The first marker found in this order wins: tool result, `TOOL:`, `BIG:`, `SLOW`, `ECHO`.
//!
//! # What the real CLI does against this mock (Claude Code 2.1.332, measured here)
//!
//! Startup and environment:
//! - Run as `claude -p --input-format stream-json --output-format stream-json --verbose` with a
//!   clean environment (PATH, HOME, LANG, TERM, USER, the credential, `ANTHROPIC_BASE_URL`,
//!   `DISABLE_AUTOUPDATER=1`, `DISABLE_TELEMETRY=1`, `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`)
//!   and an empty HOME, it needs no onboarding, trust dialog, settings file or `.claude.json`: it
//!   creates `~/.claude.json` and `~/.claude/` itself, as root too.
//! - It prints nothing until the first user line arrives, so there is no "ready" line to wait
//!   for. The `system/init` line comes about 0.4 s after spawn when the user line is written at
//!   once (0.1 s after the user line if the process has been idle for a while; about 1 s on a
//!   loaded machine). Every turn starts with a fresh `system/init` line.
//! - After stdin closes it exits within about 50 ms (0, or 1 if the last turn was interrupted or
//!   ended in an API error). While it is backing off after an error (`api_retry`), closing stdin
//!   does not end it: it finishes its retries first. An interrupt does end the retries at once.
//!
//! Requests:
//! - With the variables above it sends exactly one request per model call, to the base URL:
//!   `POST /v1/messages?beta=true` with `stream: true`. No `/v1/models`, no `count_tokens`, no
//!   non-streaming title or quota call, no `/api/...` call, and no DNS lookup of any other host
//!   (checked with strace). Without `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC` (and
//!   `DISABLE_TELEMETRY`) it also sends `HEAD /api/hello` to the base URL at startup and resolves
//!   `api.anthropic.com` many times; offline that fails quietly and does not delay the turn.
//! - Headers: `x-api-key` (or `Authorization: Bearer` with `CLAUDE_CODE_OAUTH_TOKEN`, and then no
//!   `x-api-key`), `anthropic-version: 2023-06-01`, `anthropic-beta` (a long list starting with
//!   `claude-code-20250219`; an OAuth token adds `oauth-2025-04-20` and
//!   `extended-cache-ttl-2025-04-11`), `x-app: cli`, `user-agent: claude-cli/2.1.332 (external,
//!   sdk-cli)`, `x-claude-code-session-id` (equal to the stream-json `session_id`),
//!   `anthropic-dangerous-direct-browser-access: true`, and `x-stainless-*` (`-timeout: 600`;
//!   `-retry-count` stays 0 even on retries, which the CLI runs itself).
//! - Body: `model` (`claude-opus-5-5` by default with an API key, `claude-sonnet-5-5` with an
//!   OAuth token), `max_tokens: 128000`, `stream: true`, `system`, `tools`, `metadata`,
//!   `thinking`, `context_management`, `output_config`; about 50 KB. `messages` holds a `user`
//!   message whose content is a `<system-reminder>` text block followed by the user's text, and
//!   then a message with role `system` (the environment description). So the last message is not
//!   the user's: markers are read from the last message whose role is `user`, and the `ECHO`
//!   count includes the `system` message.
//! - An OAuth token calls no profile, roles or token endpoint; it changes only the headers and
//!   the default model, and adds a `rate_limit_event` line to stdout after each answer.
//! - A tool turn is two requests: the second one's last `user` message holds the `tool_result`.
//! - `ping` events are not relayed as `stream_event` lines.
//! - An interrupt closes the HTTP connection in the middle of the SSE stream; the mock records
//!   that as [`StreamEnd::ClientGone`].
//! - `--resume=<id>` in a new process keeps the same `session_id`, and its first request carries
//!   the earlier turns (user, assistant, …) before the new user message.
//!
//! Errors from `/v1/messages` (the process never exits on its own; stdout tells):
//! - 401 with an API key: `system/api_retry` lines (`error_status: 401`, `error:
//!   "authentication_failed"`, `max_retries: 10`) with delays doubling from about 0.6 s, each a
//!   new request to the mock; minutes in all.
//! - 401 with an OAuth token: two `api_retry` lines, then a synthetic `assistant` message
//!   (`model: "<synthetic>"`, `error: "authentication_failed"`, text `Not logged in · Please run
//!   /login`) and a `result` with `subtype: "success"`, `is_error: true`, `api_error_status: 401`.
//! - 403: no retry; at once a synthetic message `Failed to authenticate. API Error: 403 …`
//!   (`error: "authentication_failed"`) and an `is_error` result with `api_error_status: 403`.
//! - 429 (`error: "rate_limit"`, honouring `retry-after`) and 500 (`error: "server_error"`):
//!   `api_retry` like a 401 with a key. 529 (`error: "overloaded"`): two retries, then a
//!   synthetic `Repeated 529 Overloaded errors …` message and an `is_error` result.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use serde_json::{json, Value};

/// The only `anthropic-version` the mock accepts, as the real API's current one.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The text of the default reply.
pub const DEFAULT_REPLY: &str = "Hello from the mock.";
/// Time between two words of a `SLOW` reply.
pub const SLOW_WORD_INTERVAL: Duration = Duration::from_millis(300);
/// Number of words in a `SLOW` reply (about 18 s at [`SLOW_WORD_INTERVAL`]).
pub const SLOW_WORDS: usize = 60;
/// Largest `BIG:<n>` reply, in bytes.
pub const BIG_MAX: usize = 64 * 1024 * 1024;
/// Size of one text delta of a `BIG:<n>` reply, in bytes.
pub const BIG_DELTA: usize = 16 * 1024;
/// Largest request body the mock reads, in bytes. Resumed conversations with big tool results
/// grow past actix's 256 KiB default; the real API's limit is 32 MB.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// The models `GET /v1/models` lists, newest first, as `(id, display_name, created_at)`.
/// The first two are the CLI's defaults for API keys and OAuth tokens.
pub const MODELS: &[(&str, &str, &str)] = &[
    ("claude-opus-5-5", "Claude Opus 5.5", "2026-09-01T00:00:00Z"),
    (
        "claude-sonnet-5-5",
        "Claude Sonnet 5.5",
        "2026-09-01T00:00:00Z",
    ),
    (
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-01T00:00:00Z",
    ),
    (
        "claude-sonnet-4-5-20250929",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
    ),
];

/// How the mock answers one credential on one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Answer normally; on `/v1/models`, accept the key even if it does not look like one.
    Ok,
    /// Answer with this status and the Anthropic error body for it: 400
    /// `invalid_request_error`, 401 `authentication_error`, 403 `permission_error`, 404
    /// `not_found_error`, 413 `request_too_large`, 429 `rate_limit_error` (with `retry-after`),
    /// 500 `api_error`, 529 `overloaded_error`.
    Status(u16),
    /// Wait this long before answering as usual, so that a client's timeout fires first.
    Hang(Duration),
}

/// How a streamed (SSE) answer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Every event was handed to the connection.
    Completed,
    /// The client closed the connection first (an interrupt, a killed process).
    ClientGone,
}

/// One request the mock received, recorded when it arrived and updated as it was answered.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Arrival order, from 0.
    pub seq: u64,
    /// When it arrived.
    pub at: Instant,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path without the query (`/v1/messages`).
    pub path: String,
    /// The query string without `?` (the CLI sends `beta=true`), empty if none.
    pub query: String,
    /// Every header, names lower-cased; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, if it is JSON.
    pub body: Option<Value>,
    /// The body as text (lossy UTF-8), for bodies that are not JSON (OAuth forms).
    pub body_text: String,
    /// The status answered, once the mock has decided it.
    pub status: Option<u16>,
    /// For SSE answers, how the stream ended; `None` while it runs, or if it was not a stream.
    pub stream_end: Option<StreamEnd>,
}

impl RecordedRequest {
    /// A header's value by its name, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The `x-api-key` header.
    pub fn api_key(&self) -> Option<&str> {
        self.header("x-api-key")
    }

    /// The token of an `Authorization: Bearer` header.
    pub fn bearer_token(&self) -> Option<&str> {
        self.header("authorization").and_then(bearer)
    }

    /// Whichever credential the request carries: the API key, else the bearer token.
    pub fn credential(&self) -> Option<&str> {
        self.api_key().or_else(|| self.bearer_token())
    }

    /// The CLI's `x-claude-code-session-id` header: the stream-json `session_id` of the process
    /// that sent the request, so a test with several sessions can tell their requests apart.
    pub fn cli_session_id(&self) -> Option<&str> {
        self.header("x-claude-code-session-id")
    }

    /// Whether this is a `POST /v1/messages` (the model calls; not `count_tokens`).
    pub fn is_messages(&self) -> bool {
        self.method == "POST" && self.path == "/v1/messages"
    }

    /// The body's `messages` array, empty if there is none.
    pub fn messages(&self) -> &[Value] {
        self.body
            .as_ref()
            .and_then(|b| b.get("messages"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The text of every `user` message that has some (tool-result-only messages have none), in
    /// order, as the markers see it.
    pub fn user_texts(&self) -> Vec<String> {
        user_texts(self.messages())
    }

    /// The text of the last `user` message, as the markers see it.
    pub fn last_user_text(&self) -> Option<String> {
        last_user(self.messages()).map(user_text)
    }
}

/// What [`MockApi::wait_for`] returns when its condition did not hold in time. Its `Debug`
/// lists what the mock did receive, so `.expect(...)` in a test explains itself.
#[derive(Debug)]
pub struct WaitTimeout {
    /// How long the wait lasted.
    pub waited: Duration,
    /// `METHOD path -> status` of every request received so far.
    pub received: Vec<String>,
}

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mock API: condition not met after {:?}; received {:?}",
            self.waited, self.received
        )
    }
}

impl std::error::Error for WaitTimeout {}

/// A running mock. Cheap to query from any thread; stops the server when dropped.
pub struct MockApi {
    addr: SocketAddr,
    state: Arc<State>,
    server: actix_web::dev::ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl MockApi {
    /// Starts a mock on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback port cannot be bound, which leaves a test nothing to do.
    #[allow(clippy::expect_used)] // test support: a mock that cannot start is a failed test
    pub fn start() -> MockApi {
        MockApi::start_on("127.0.0.1:0").expect("start the mock Anthropic API on 127.0.0.1:0")
    }

    /// Starts a mock on `addr` (the demo uses `127.0.0.1:3002`).
    pub fn start_on(addr: impl ToSocketAddrs) -> io::Result<MockApi> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let thread_state = Arc::clone(&state);
        // Its own thread and System: the caller may have no runtime, or a current-thread one
        // that a blocking wait would stall.
        let thread = std::thread::Builder::new()
            .name("mock-anthropic".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let data = web::Data::from(thread_state);
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .app_data(web::PayloadConfig::new(MAX_BODY))
                            .configure(routes)
                    })
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(0)
                    .listen(listener);
                    match server {
                        Ok(server) => {
                            let server = server.run();
                            let _ = handle_tx.send(Ok(server.handle()));
                            let _ = server.await;
                        }
                        Err(err) => {
                            let _ = handle_tx.send(Err(err));
                        }
                    }
                });
            })?;
        let server = handle_rx
            .recv()
            .map_err(|_| io::Error::other("the mock API thread ended before it started"))??;
        Ok(MockApi {
            addr,
            state,
            server,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash: the value for `ANTHROPIC_BASE_URL`
    /// and sashad's `anthropic.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes `GET /v1/models` answer `behavior` for this `x-api-key`.
    pub fn set_models_behavior(&self, key: &str, behavior: Behavior) {
        self.state
            .lock()
            .models_behavior
            .insert(key.to_owned(), behavior);
    }

    /// Makes `POST /v1/messages` answer `behavior` for this API key or bearer token.
    pub fn set_messages_behavior(&self, credential: &str, behavior: Behavior) {
        self.state
            .lock()
            .messages_behavior
            .insert(credential.to_owned(), behavior);
    }

    /// Makes `POST /v1/messages` answer 401 `authentication_error` for this API key or bearer
    /// token, as the real API does for a revoked key or an expired token.
    pub fn reject_messages_for(&self, credential: &str) {
        self.set_messages_behavior(credential, Behavior::Status(401));
    }

    /// Changes the pace and length of `SLOW` replies (defaults [`SLOW_WORD_INTERVAL`] and
    /// [`SLOW_WORDS`]), for tests that need a slow reply to finish, or to last longer.
    pub fn set_slow_pace(&self, interval: Duration, words: usize) {
        let mut inner = self.state.lock();
        inner.slow_interval = interval;
        inner.slow_words = words;
    }

    /// Prints one line per request to stderr (the demo turns this on).
    pub fn set_log_requests(&self, on: bool) {
        self.state.lock().log_requests = on;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().requests.clone()
    }

    /// The `POST /v1/messages` requests received so far, in arrival order.
    pub fn messages_requests(&self) -> Vec<RecordedRequest> {
        self.state
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_messages())
            .cloned()
            .collect()
    }

    /// Waits until `cond` holds for the requests received so far (re-checked after every
    /// request and every update to one), for at most `timeout`. Returns the requests it held for.
    pub async fn wait_for<F>(
        &self,
        mut cond: F,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, WaitTimeout>
    where
        F: FnMut(&[RecordedRequest]) -> bool,
    {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribing before the first check means no change between check and wait is lost.
        let mut changes = self.state.changed.subscribe();
        loop {
            {
                let inner = self.state.lock();
                if cond(&inner.requests) {
                    return Ok(inner.requests.clone());
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the sender is gone (it lives as long as `self`, so: timed out).
                _ => return Err(self.timeout_error(start)),
            }
        }
    }

    /// [`MockApi::wait_for`] for tests without an async runtime; it blocks the calling thread.
    pub fn wait_for_blocking<F>(
        &self,
        mut cond: F,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, WaitTimeout>
    where
        F: FnMut(&[RecordedRequest]) -> bool,
    {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut inner = self.state.lock();
        loop {
            if cond(&inner.requests) {
                return Ok(inner.requests.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(inner);
                return Err(self.timeout_error(start));
            }
            inner = self
                .state
                .cond
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until at least `n` `POST /v1/messages` requests have arrived; returns those.
    pub async fn wait_for_messages(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, WaitTimeout> {
        let all = self
            .wait_for(
                |reqs| reqs.iter().filter(|r| r.is_messages()).count() >= n,
                timeout,
            )
            .await?;
        Ok(all.into_iter().filter(|r| r.is_messages()).collect())
    }

    fn timeout_error(&self, start: Instant) -> WaitTimeout {
        WaitTimeout {
            waited: start.elapsed(),
            received: self.state.lock().requests.iter().map(summary).collect(),
        }
    }
}

impl Drop for MockApi {
    fn drop(&mut self) {
        // `stop` sends the command when called; its future only reports completion, which
        // joining the thread also does. Not graceful: a SLOW stream must not hold the test up.
        drop(self.server.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for MockApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockApi").field("addr", &self.addr).finish()
    }
}

/// Shared between the handlers and the [`MockApi`] handle.
struct State {
    inner: Mutex<Inner>,
    /// Wakes blocking waiters on every change.
    cond: Condvar,
    /// Counts changes; wakes async waiters.
    changed: tokio::sync::watch::Sender<u64>,
}

/// Everything the mock knows, behind one lock (never held across an await).
struct Inner {
    requests: Vec<RecordedRequest>,
    models_behavior: HashMap<String, Behavior>,
    messages_behavior: HashMap<String, Behavior>,
    slow_interval: Duration,
    slow_words: usize,
    log_requests: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            inner: Mutex::new(Inner {
                requests: Vec::new(),
                models_behavior: HashMap::new(),
                messages_behavior: HashMap::new(),
                slow_interval: SLOW_WORD_INTERVAL,
                slow_words: SLOW_WORDS,
                log_requests: false,
            }),
            cond: Condvar::new(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl State {
    /// A panic in a test thread must not make every later call panic too: the data is only a
    /// log, so a poisoned lock is still good to read.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.cond.notify_all();
        self.changed.send_modify(|n| *n += 1);
    }

    /// Records a request as it arrives and returns its `seq`.
    fn record(&self, req: &HttpRequest, body: &[u8]) -> u64 {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in req.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let seq;
        {
            let mut inner = self.lock();
            seq = inner.requests.len() as u64;
            let recorded = RecordedRequest {
                seq,
                at: Instant::now(),
                method: req.method().as_str().to_owned(),
                path: req.path().to_owned(),
                query: req.query_string().to_owned(),
                headers,
                body: serde_json::from_slice(body).ok(),
                body_text: String::from_utf8_lossy(body).into_owned(),
                status: None,
                stream_end: None,
            };
            if inner.log_requests {
                eprintln!("mock-anthropic: {}", describe(&recorded));
            }
            inner.requests.push(recorded);
        }
        self.notify();
        seq
    }

    fn update(&self, seq: u64, f: impl FnOnce(&mut RecordedRequest)) {
        {
            let mut inner = self.lock();
            if let Some(r) = usize::try_from(seq)
                .ok()
                .and_then(|i| inner.requests.get_mut(i))
            {
                f(r);
            }
        }
        self.notify();
    }

    /// Notes the status of a response and hands it back, so every exit of a handler records.
    fn answered(&self, seq: u64, resp: HttpResponse) -> HttpResponse {
        let status = resp.status().as_u16();
        self.update(seq, |r| r.status = Some(status));
        resp
    }
}

fn summary(r: &RecordedRequest) -> String {
    let status = r.status.map_or("pending".to_owned(), |s| s.to_string());
    let end = match r.stream_end {
        Some(StreamEnd::Completed) => " (stream completed)",
        Some(StreamEnd::ClientGone) => " (client went away)",
        None => "",
    };
    format!("{} {} -> {status}{end}", r.method, r.path)
}

fn describe(r: &RecordedRequest) -> String {
    let mut line = format!("{} {}", r.method, r.path);
    if r.is_messages() {
        let model = r
            .body
            .as_ref()
            .and_then(|b| b.get("model"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        let text = r.last_user_text().unwrap_or_default();
        let text: String = text.chars().take(60).collect();
        line.push_str(&format!(
            " model={model} messages={} last_user={text:?}",
            r.messages().len()
        ));
    }
    line
}

/// Every route of the mock. New endpoints (OAuth authorize and token) go here.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/models", web::get().to(list_models))
        .route("/v1/models/{id}", web::get().to(get_model))
        .route("/v1/messages", web::post().to(messages))
        .route("/v1/messages/count_tokens", web::post().to(count_tokens))
        .route("/api/hello", web::route().to(hello))
        .default_service(web::to(not_found));
}

type Data = web::Data<State>;

fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn header_str<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn request_id() -> String {
    format!("req_mock{:016x}", rand::random::<u64>())
}

/// The real API's error body: `{"type":"error","error":{"type":..,"message":..},"request_id":..}`.
fn api_error(status: u16, message: &str) -> HttpResponse {
    let (kind, default_message) = match status {
        400 => ("invalid_request_error", "Invalid request"),
        401 => ("authentication_error", "invalid x-api-key"),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => ("not_found_error", "Not found"),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed size",
        ),
        429 => (
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        ),
        529 => ("overloaded_error", "Overloaded"),
        s if s >= 500 => ("api_error", "Internal server error"),
        _ => ("invalid_request_error", "Invalid request"),
    };
    let message = if message.is_empty() {
        default_message
    } else {
        message
    };
    let id = request_id();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = HttpResponse::build(status);
    resp.insert_header(("request-id", id.as_str()));
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.insert_header((header::RETRY_AFTER, "1"));
    }
    resp.json(wire::ErrorBody {
        error: wire::ErrorDetail { kind, message },
        request_id: &id,
    })
}

/// Checks `anthropic-version` and `x-api-key` the way `/v1/models` does, and applies the key's
/// [`Behavior`]. `None` means: answer normally.
async fn models_gate(req: &HttpRequest, state: &State) -> Option<HttpResponse> {
    match header_str(req, "anthropic-version") {
        Some(ANTHROPIC_VERSION) => {}
        Some(other) => {
            return Some(api_error(
                400,
                &format!("anthropic-version: unknown version {other:?}"),
            ))
        }
        None => return Some(api_error(400, "anthropic-version: header is required")),
    }
    let Some(key) = header_str(req, "x-api-key") else {
        return Some(api_error(401, "x-api-key header is required"));
    };
    let behavior = state.lock().models_behavior.get(key).cloned();
    match behavior {
        Some(Behavior::Status(status)) => return Some(api_error(status, "")),
        Some(Behavior::Hang(d)) => actix_rt::time::sleep(d).await,
        Some(Behavior::Ok) => return None,
        None => {}
    }
    if key.starts_with("sk-ant-") {
        None
    } else {
        Some(api_error(401, "invalid x-api-key"))
    }
}

fn model(
    &(id, display_name, created_at): &'static (&'static str, &'static str, &'static str),
) -> wire::Model {
    wire::Model {
        id,
        display_name,
        created_at,
    }
}

async fn list_models(req: HttpRequest, body: web::Bytes, state: Data) -> HttpResponse {
    let seq = state.record(&req, &body);
    if let Some(resp) = models_gate(&req, &state).await {
        return state.answered(seq, resp);
    }
    let resp = HttpResponse::Ok()
        .insert_header(("request-id", request_id()))
        .json(wire::ModelList {
            data: MODELS.iter().map(model).collect(),
            has_more: false,
            first_id: MODELS.first().map(|m| m.0),
            last_id: MODELS.last().map(|m| m.0),
        });
    state.answered(seq, resp)
}

async fn get_model(
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
    state: Data,
) -> HttpResponse {
    let seq = state.record(&req, &body);
    if let Some(resp) = models_gate(&req, &state).await {
        return state.answered(seq, resp);
    }
    let resp = match MODELS.iter().find(|m| m.0 == path.as_str()) {
        Some(m) => HttpResponse::Ok().json(model(m)),
        None => api_error(404, &format!("model: {}", path.as_str())),
    };
    state.answered(seq, resp)
}

async fn hello(req: HttpRequest, body: web::Bytes, state: Data) -> HttpResponse {
    let seq = state.record(&req, &body);
    state.answered(seq, HttpResponse::Ok().finish())
}

async fn not_found(req: HttpRequest, body: web::Bytes, state: Data) -> HttpResponse {
    let seq = state.record(&req, &body);
    let resp = api_error(404, &format!("Not found: {} {}", req.method(), req.path()));
    state.answered(seq, resp)
}

async fn count_tokens(req: HttpRequest, body: web::Bytes, state: Data) -> HttpResponse {
    let seq = state.record(&req, &body);
    // About four bytes a token, which is all a client can expect from a mock.
    let resp = HttpResponse::Ok().json(json!({"input_tokens": body.len() / 4 + 1}));
    state.answered(seq, resp)
}

/// What the mock will say, decided from the request before any of it is sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Text, sent as these deltas, with this pause before each one.
    Text {
        /// The deltas; the text is their concatenation.
        deltas: Vec<String>,
        /// Pause before each delta (zero for all but `SLOW`).
        pace: Duration,
    },
    /// One `tool_use` block.
    ToolUse {
        /// The tool's name (`Bash`).
        name: String,
        /// The tool's input.
        input: Value,
    },
}

impl Reply {
    fn text(text: &str) -> Reply {
        Reply::Text {
            deltas: vec![text.to_owned()],
            pace: Duration::ZERO,
        }
    }
}

fn last_user(messages: &[Value]) -> Option<&Value> {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
}

/// The text a person typed in one message: its text blocks, without the CLI's
/// `<system-reminder>` blocks (which quote CLAUDE.md files and so could contain a marker).
fn user_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .filter(|t| !t.trim_start().starts_with("<system-reminder>"))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn user_texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(user_text)
        .filter(|t| !t.is_empty())
        .collect()
}

/// The text of a `tool_result` block's `content` (a string, or text blocks).
fn tool_result_text(block: &Value) -> String {
    match block.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Picks the reply for a Messages API request body (see the module doc's marker table).
pub fn script(body: &Value, slow_interval: Duration, slow_words: usize) -> Reply {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(last) = last_user(messages) else {
        return Reply::text(DEFAULT_REPLY);
    };
    if let Some(Value::Array(blocks)) = last.get("content") {
        if let Some(result) = blocks
            .iter()
            .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        {
            return Reply::text(&format!("TOOL-RESULT: {}", tool_result_text(result)));
        }
    }
    let text = user_text(last);
    if let Some((_, command)) = text.split_once("TOOL:") {
        return Reply::ToolUse {
            name: "Bash".to_owned(),
            input: json!({"command": command.trim(), "description": "run"}),
        };
    }
    if let Some((_, rest)) = text.split_once("BIG:") {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let n = digits.parse::<usize>().unwrap_or(0).min(BIG_MAX);
        // A recognisable pattern, so a test can check that nothing was lost or reordered.
        let pattern = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";
        let bytes: Vec<u8> = pattern.iter().copied().cycle().take(n).collect();
        let deltas = bytes
            .chunks(BIG_DELTA)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        return Reply::Text {
            deltas,
            pace: Duration::ZERO,
        };
    }
    if text.contains("SLOW") {
        return Reply::Text {
            deltas: (0..slow_words).map(|i| format!("w{i} ")).collect(),
            pace: slow_interval,
        };
    }
    if text.contains("ECHO") {
        let mut turns = user_texts(messages);
        turns.pop(); // the ECHO turn itself
        let turns = serde_json::to_string(&turns).unwrap_or_default();
        return Reply::text(&format!(
            "ECHO messages={} earlier_user_turns={turns}",
            messages.len()
        ));
    }
    Reply::Text {
        deltas: ["Hello ", "from ", "the ", "mock."]
            .map(str::to_owned)
            .to_vec(),
        pace: Duration::ZERO,
    }
}

async fn messages(req: HttpRequest, body: web::Bytes, state: Data) -> HttpResponse {
    let seq = state.record(&req, &body);
    match header_str(&req, "anthropic-version") {
        Some(ANTHROPIC_VERSION) => {}
        _ => {
            let resp = api_error(400, "anthropic-version: header is required");
            return state.answered(seq, resp);
        }
    }
    let credential = header_str(&req, "x-api-key")
        .or_else(|| header_str(&req, "authorization").and_then(bearer))
        .filter(|c| !c.is_empty());
    let Some(credential) = credential else {
        let resp = api_error(401, "x-api-key header is required");
        return state.answered(seq, resp);
    };
    let (behavior, slow_interval, slow_words) = {
        let inner = state.lock();
        (
            inner.messages_behavior.get(credential).cloned(),
            inner.slow_interval,
            inner.slow_words,
        )
    };
    match behavior {
        Some(Behavior::Status(status)) => {
            let message = if status == 401 {
                "invalid x-api-key"
            } else {
                ""
            };
            return state.answered(seq, api_error(status, message));
        }
        Some(Behavior::Hang(d)) => actix_rt::time::sleep(d).await,
        Some(Behavior::Ok) | None => {}
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return state.answered(seq, api_error(400, "The request body is not valid JSON."));
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-opus-5-5")
        .to_owned();
    let reply = script(&request, slow_interval, slow_words);
    let message_id = format!("msg_mock{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let events = sse_events(&message_id, &model, &reply);
        let guard = StreamGuard {
            state: state.clone(),
            seq,
            completed: false,
        };
        let stream = futures_util::stream::unfold(
            (events.into_iter(), guard),
            |(mut events, guard)| async move {
                let Some((pause, bytes)) = events.next() else {
                    guard.complete();
                    return None;
                };
                if !pause.is_zero() {
                    actix_rt::time::sleep(pause).await;
                }
                Some((Ok::<_, io::Error>(bytes), (events, guard)))
            },
        );
        let resp = HttpResponse::Ok()
            .content_type("text/event-stream; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header(("request-id", request_id()))
            .streaming(stream);
        state.answered(seq, resp)
    } else {
        let resp = HttpResponse::Ok()
            .insert_header(("request-id", request_id()))
            .content_type("application/json")
            .body(full_message(&message_id, &model, &reply));
        state.answered(seq, resp)
    }
}

/// Records how an SSE stream ended when actix drops it: after the last event, or earlier
/// because the client went away (actix drops the body of a closed connection).
struct StreamGuard {
    state: Data,
    seq: u64,
    completed: bool,
}

impl StreamGuard {
    fn complete(mut self) {
        self.completed = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let end = if self.completed {
            StreamEnd::Completed
        } else {
            StreamEnd::ClientGone
        };
        self.state.update(self.seq, |r| r.stream_end = Some(end));
    }
}

fn sse(event: &wire::Event<'_>) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_default();
    Bytes::from(format!("event: {}\ndata: {data}\n\n", event.name()))
}

fn new_tool_id() -> String {
    format!(
        "toolu_mock{:012x}",
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

/// The SSE events of one reply, each with the pause before it.
fn sse_events(id: &str, model: &str, reply: &Reply) -> Vec<(Duration, Bytes)> {
    use wire::{Block, Delta, Event};
    let now = |event: Event<'_>| (Duration::ZERO, sse(&event));
    let mut events = vec![
        now(Event::MessageStart {
            message: wire::Message::new(id, model, Vec::new(), None, 1),
        }),
        // The real API sends a ping early in every stream.
        now(Event::Ping),
    ];
    let (stop_reason, output_tokens) = match reply {
        Reply::Text { deltas, pace } => {
            events.push(now(Event::ContentBlockStart {
                index: 0,
                content_block: Block::Text { text: "" },
            }));
            for text in deltas {
                let event = Event::ContentBlockDelta {
                    index: 0,
                    delta: Delta::TextDelta { text },
                };
                events.push((*pace, sse(&event)));
            }
            ("end_turn", deltas.len())
        }
        Reply::ToolUse { name, input } => {
            let tool_id = new_tool_id();
            let empty = json!({});
            events.push(now(Event::ContentBlockStart {
                index: 0,
                content_block: Block::ToolUse {
                    id: &tool_id,
                    name,
                    input: &empty,
                },
            }));
            // Split in two, as the real API does, so clients must join partial JSON.
            let input = input.to_string();
            let cut = (0..=input.len() / 2)
                .rev()
                .find(|&i| input.is_char_boundary(i))
                .unwrap_or(0);
            for partial_json in [&input[..cut], &input[cut..]] {
                events.push(now(Event::ContentBlockDelta {
                    index: 0,
                    delta: Delta::InputJsonDelta { partial_json },
                }));
            }
            ("tool_use", 2)
        }
    };
    events.push(now(Event::ContentBlockStop { index: 0 }));
    events.push(now(Event::MessageDelta {
        delta: wire::StopDelta {
            stop_reason: Some(stop_reason),
            stop_sequence: None,
        },
        usage: wire::OutputUsage { output_tokens },
    }));
    events.push(now(Event::MessageStop));
    events
}

/// The non-streaming answer: the whole message as one JSON object.
fn full_message(id: &str, model: &str, reply: &Reply) -> String {
    let text;
    let tool_id;
    let (content, stop_reason, tokens) = match reply {
        Reply::Text { deltas, .. } => {
            text = deltas.concat();
            (
                vec![wire::Block::Text { text: &text }],
                "end_turn",
                deltas.len(),
            )
        }
        Reply::ToolUse { name, input } => {
            tool_id = new_tool_id();
            let block = wire::Block::ToolUse {
                id: &tool_id,
                name,
                input,
            };
            (vec![block], "tool_use", 2)
        }
    };
    let message = wire::Message::new(id, model, content, Some(stop_reason), tokens);
    serde_json::to_string(&message).unwrap_or_default()
}

/// The API's JSON shapes, as typed structs: serde writes struct fields and internal tags in
/// declaration order, so `type` comes first as in the real API. (`serde_json::Value` would sort
/// the keys, and the CLI copies the order into the stream-json lines it prints.)
mod wire {
    use serde::Serialize;
    use serde_json::Value;

    /// One SSE event of a streamed message.
    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum Event<'a> {
        MessageStart {
            message: Message<'a>,
        },
        Ping,
        ContentBlockStart {
            index: usize,
            content_block: Block<'a>,
        },
        ContentBlockDelta {
            index: usize,
            delta: Delta<'a>,
        },
        ContentBlockStop {
            index: usize,
        },
        MessageDelta {
            delta: StopDelta<'a>,
            usage: OutputUsage,
        },
        MessageStop,
    }

    impl Event<'_> {
        /// The SSE `event:` name, which the API sets to the data's `type`.
        pub fn name(&self) -> &'static str {
            match self {
                Event::MessageStart { .. } => "message_start",
                Event::Ping => "ping",
                Event::ContentBlockStart { .. } => "content_block_start",
                Event::ContentBlockDelta { .. } => "content_block_delta",
                Event::ContentBlockStop { .. } => "content_block_stop",
                Event::MessageDelta { .. } => "message_delta",
                Event::MessageStop => "message_stop",
            }
        }
    }

    /// A message, in `message_start` (empty) or as a non-streaming answer (whole).
    #[derive(Serialize)]
    pub struct Message<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        role: &'static str,
        model: &'a str,
        content: Vec<Block<'a>>,
        stop_reason: Option<&'a str>,
        stop_sequence: Option<&'a str>,
        usage: Usage,
    }

    impl<'a> Message<'a> {
        pub fn new(
            id: &'a str,
            model: &'a str,
            content: Vec<Block<'a>>,
            stop_reason: Option<&'a str>,
            output_tokens: usize,
        ) -> Self {
            Message {
                id,
                kind: "message",
                role: "assistant",
                model,
                content,
                stop_reason,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: 10,
                    cache_creation_input_tokens: 0,
                    cache_read_input_tokens: 0,
                    output_tokens,
                    service_tier: "standard",
                },
            }
        }
    }

    /// Token counts; made up, but shaped like the API's.
    #[derive(Serialize)]
    pub struct Usage {
        input_tokens: usize,
        cache_creation_input_tokens: usize,
        cache_read_input_tokens: usize,
        output_tokens: usize,
        service_tier: &'static str,
    }

    /// A content block.
    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum Block<'a> {
        Text {
            text: &'a str,
        },
        ToolUse {
            id: &'a str,
            name: &'a str,
            input: &'a Value,
        },
    }

    /// The `delta` of a `content_block_delta`.
    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum Delta<'a> {
        TextDelta { text: &'a str },
        InputJsonDelta { partial_json: &'a str },
    }

    /// The `delta` of a `message_delta`.
    #[derive(Serialize)]
    pub struct StopDelta<'a> {
        pub stop_reason: Option<&'a str>,
        pub stop_sequence: Option<&'a str>,
    }

    /// The `usage` of a `message_delta`.
    #[derive(Serialize)]
    pub struct OutputUsage {
        pub output_tokens: usize,
    }

    /// `{"type":"error","error":{"type":..,"message":..},"request_id":..}`
    #[derive(Serialize)]
    #[serde(tag = "type", rename = "error")]
    pub struct ErrorBody<'a> {
        pub error: ErrorDetail<'a>,
        pub request_id: &'a str,
    }

    /// The inner `error` of an [`ErrorBody`].
    #[derive(Serialize)]
    pub struct ErrorDetail<'a> {
        #[serde(rename = "type")]
        pub kind: &'a str,
        pub message: &'a str,
    }

    /// One entry of `GET /v1/models`.
    #[derive(Serialize)]
    #[serde(tag = "type", rename = "model")]
    pub struct Model {
        pub id: &'static str,
        pub display_name: &'static str,
        pub created_at: &'static str,
    }

    /// The answer of `GET /v1/models` (one page holds them all).
    #[derive(Serialize)]
    pub struct ModelList {
        pub data: Vec<Model>,
        pub has_more: bool,
        pub first_id: Option<&'static str>,
        pub last_id: Option<&'static str>,
    }
}
