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
//! - `GET /oauth/authorize`, `GET /oauth/code`, `POST /oauth/token`: an OAuth 2.0 provider; see
//!   "OAuth 2.0 provider" below.
//! - Anything else: 404 `not_found_error`, recorded like every other request, so a test can see
//!   that a client called something unexpected.
//!
//! # OAuth 2.0 provider
//!
//! The authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636 S256 only) and refresh
//! (RFC 6749 §6), for sashad's OAuth bridge. There is one client, [`OAuthConfig::client_id`]
//! (default [`OAUTH_CLIENT_ID`]), public unless a secret is configured. Point sashad at
//! [`MockApi::authorize_url`] and [`MockApi::token_url`]. The user is imaginary and clicks
//! "Allow" at once, so the authorization endpoint answers straight away; a test plays the
//! browser with [`MockApi::authorize`] (or any HTTP client).
//!
//! `GET /oauth/authorize?response_type=code&client_id&redirect_uri&scope&state&code_challenge&
//! code_challenge_method=S256`:
//! - A missing or unknown `client_id`, or a missing, relative, non-http(s), fragment-carrying or
//!   (when [`OAuthConfig::redirect_uris`] is set) unregistered `redirect_uri`: 400 HTML page
//!   with `<p id="error">` and `<p id="error_description">`, and no redirect (RFC 6749
//!   §4.1.2.1).
//! - Other errors are sent to the redirect URI as `?error=…&error_description=…&state=…` with a
//!   302 (RFC 6749 §4.1.2.1): a repeated parameter or a missing `response_type` →
//!   `invalid_request`; another `response_type` → `unsupported_response_type`; no
//!   `code_challenge` (RFC 7636 §4.4.1), a method other than `S256` (none means `plain`, which
//!   is refused), or a challenge that is not 43 base64url characters → `invalid_request`; a
//!   malformed `scope` → `invalid_scope`; [`OAuthConfig::deny_authorize`] →
//!   [`OAuthConfig::deny_error`] (`access_denied`) with [`OAuthConfig::error_description`].
//! - Otherwise: 302 to `redirect_uri?code=<code>&state=<state>`, the redirect URI's own query
//!   kept (RFC 6749 §4.1.2). `state` is echoed when sent and not required. The code is bound to
//!   the client, the redirect URI, the challenge and the scope (the request's, else
//!   [`OAuthConfig::default_scope`]), and expires after [`OAuthConfig::code_ttl`].
//!
//! Paste mode, the way Claude Code signs in on a remote machine: the client uses
//! [`MockApi::paste_redirect_uri`] (`<base>/oauth/code`) as its redirect URI. The provider
//! redirects there like anywhere else, and `GET /oauth/code?code&state` is the provider's page
//! showing `<pre id="code">code#state</pre>` (HTML-escaped) for the user to copy into the
//! client; with `?error=` it shows the error like the page above. The client then exchanges
//! the code with `redirect_uri=<base>/oauth/code`.
//!
//! `POST /oauth/token`, `application/x-www-form-urlencoded` (RFC 6749 §4.1.3, §6). Answers are
//! JSON with `Cache-Control: no-store` (RFC 6749 §5.1): `{access_token, token_type: "Bearer",
//! expires_in, refresh_token, scope}`, or `{error, error_description}` (RFC 6749 §5.2) with 400,
//! or 401 and `WWW-Authenticate: Basic` for `invalid_client`. Checks, in order:
//! - [`OAuthConfig::token_endpoint_status`] set: that status, `server_error`, whatever was sent.
//! - Another content type, a non-UTF-8 body or a repeated parameter: `invalid_request`.
//! - Client authentication (RFC 6749 §2.3.1): `Authorization: Basic` with the form-encoded id
//!   and secret, or `client_id` (and `client_secret`) in the body. Both Basic and a body
//!   secret: `invalid_request`. No client id, an unknown one, a Basic id that differs from the
//!   body's, a wrong or missing secret when [`OAuthConfig::client_secret`] is set, or a
//!   non-empty secret when it is not: `invalid_client`.
//! - No `grant_type`: `invalid_request`; one other than the two below:
//!   `unsupported_grant_type`.
//! - `authorization_code`: a missing `code`, `redirect_uri` or `code_verifier`, or a verifier
//!   that is not 43 to 128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1): `invalid_request`.
//!   Then `invalid_grant` for a code that is unknown, issued to another client, already
//!   presented, or expired, a `redirect_uri` that is not the authorization request's, or a
//!   verifier whose S256 is not the challenge (RFC 7636 §4.6). A code gets one attempt: once
//!   presented it is spent, even if the exchange failed. Presenting a code again also revokes
//!   the tokens issued with it (RFC 6749 §4.1.2).
//! - `refresh_token`: a missing `refresh_token`: `invalid_request`. An unknown, rotated-away
//!   or revoked refresh token, or one issued to another client: `invalid_grant`. A `scope`
//!   beyond the original grant: `invalid_scope`. Otherwise a new access token, and (with
//!   [`OAuthConfig::rotate_refresh_tokens`], the default) a new refresh token, the presented
//!   one becoming `invalid_grant` at once. [`OAuthConfig::refresh_delay`] holds the answer
//!   back; the rotation happens on arrival, so concurrent refreshes with one token are visible
//!   in [`MockApi::token_requests`] at once and all but the first fail.
//!
//! Access tokens look like `sk-ant-oat01-mock-…` and refresh tokens like `sk-ant-ort01-mock-…`.
//! `POST /v1/messages` still accepts any credential, and an access token the provider issued
//! until it expires ([`OAuthConfig::access_token_ttl`], or [`MockApi::expire_access_token`]),
//! then answers 401 `authentication_error` [`OAUTH_EXPIRED_MESSAGE`] as the real API does, or
//! after it is revoked (a code presented twice) [`OAUTH_REVOKED_MESSAGE`]. A behaviour set with
//! [`MockApi::set_messages_behavior`] for the token wins. [`MockApi::revoke_refresh_tokens`]
//! and [`MockApi::revoke_refresh_token`] make refresh answer `invalid_grant`, as when the user
//! signs out or the provider revokes a sign-in. [`MockApi::authorize_requests`],
//! [`MockApi::token_requests`] (grant type, client authentication, parameters, outcome) and
//! [`MockApi::issued_access_tokens`] tell a test what happened.
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
        self.wait_until(
            |inner| cond(&inner.requests).then(|| inner.requests.clone()),
            timeout,
        )
        .await
    }

    /// Waits until `check` returns something, re-checked after every change to the mock's
    /// state, for at most `timeout`.
    async fn wait_until<T>(
        &self,
        mut check: impl FnMut(&Inner) -> Option<T>,
        timeout: Duration,
    ) -> Result<T, WaitTimeout> {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribing before the first check means no change between check and wait is lost.
        let mut changes = self.state.changed.subscribe();
        loop {
            // A statement of its own, so the lock is released before the await below.
            let found = check(&self.state.lock());
            if let Some(found) = found {
                return Ok(found);
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
    oauth: OAuth,
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
                oauth: OAuth::default(),
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
    } else if r.path == OAUTH_TOKEN_PATH {
        // Never the code, verifier or tokens: the demo's log is for people to read.
        let (form, _) = parse_form(&r.body_text);
        let grant = form.get("grant_type").map_or("?", String::as_str);
        line.push_str(&format!(" grant_type={grant}"));
    }
    line
}

/// Every route of the mock.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/models", web::get().to(list_models))
        .route("/v1/models/{id}", web::get().to(get_model))
        .route("/v1/messages", web::post().to(messages))
        .route("/v1/messages/count_tokens", web::post().to(count_tokens))
        .route("/api/hello", web::route().to(hello))
        .route(OAUTH_AUTHORIZE_PATH, web::get().to(oauth_authorize))
        .route(OAUTH_CODE_PAGE_PATH, web::get().to(oauth_code_page))
        .route(OAUTH_TOKEN_PATH, web::post().to(oauth_token))
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
    let (behavior, oauth_refusal, slow_interval, slow_words) = {
        let inner = state.lock();
        (
            inner.messages_behavior.get(credential).cloned(),
            inner.oauth.messages_refusal(credential, Instant::now()),
            inner.slow_interval,
            inner.slow_words,
        )
    };
    // A behaviour set for this credential wins over the provider's view of its own tokens.
    if let (None, Some(message)) = (&behavior, oauth_refusal) {
        return state.answered(seq, api_error(401, message));
    }
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

// ---------------------------------------------------------------------------------------------
// The OAuth 2.0 provider (see the module doc's "OAuth 2.0 provider" section).
// ---------------------------------------------------------------------------------------------

/// The client id the provider knows by default ([`OAuthConfig::client_id`]).
pub const OAUTH_CLIENT_ID: &str = "sashad-test-client";
/// The scope granted when an authorization request names none (RFC 6749 §3.3).
pub const OAUTH_DEFAULT_SCOPE: &str = "user:profile user:inference";
/// Path of the authorization endpoint (RFC 6749 §3.1).
pub const OAUTH_AUTHORIZE_PATH: &str = "/oauth/authorize";
/// Path of the token endpoint (RFC 6749 §3.2).
pub const OAUTH_TOKEN_PATH: &str = "/oauth/token";
/// Path of the provider's own "copy this code" page, the redirect URI of paste mode.
pub const OAUTH_CODE_PAGE_PATH: &str = "/oauth/code";
/// Default lifetime of an authorization code (RFC 6749 §4.1.2 recommends at most 10 minutes).
pub const OAUTH_CODE_TTL: Duration = Duration::from_secs(60);
/// Default lifetime of an access token; `expires_in` is its whole seconds.
pub const OAUTH_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The message of the 401 `authentication_error` that `POST /v1/messages` gives an expired
/// access token, word for word as the real API gives it.
pub const OAUTH_EXPIRED_MESSAGE: &str =
    "OAuth token has expired. Please obtain a new token or refresh your existing token.";
/// The message of the 401 `authentication_error` for an access token the provider revoked.
pub const OAUTH_REVOKED_MESSAGE: &str = "Invalid authentication credentials";

/// How the OAuth provider behaves; [`MockApi::set_oauth_config`] swaps it at any time, and it
/// applies to the next request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthConfig {
    /// The one client the provider knows (default [`OAUTH_CLIENT_ID`]).
    pub client_id: String,
    /// `None` (default): a public client, identified by `client_id` in the token request body.
    /// `Some`: a confidential client, which must authenticate at the token endpoint with HTTP
    /// Basic or `client_secret` in the body (RFC 6749 §2.3.1).
    pub client_secret: Option<String>,
    /// Registered redirect URIs, compared as exact strings (RFC 6749 §3.1.2.3). Empty (default):
    /// any absolute `http` or `https` URI without a fragment, because a test daemon's port is
    /// known only once it runs.
    pub redirect_uris: Vec<String>,
    /// Granted when the authorization request has no `scope` (default [`OAUTH_DEFAULT_SCOPE`]).
    pub default_scope: String,
    /// Lifetime of an authorization code (default [`OAUTH_CODE_TTL`]; zero: expired at once).
    pub code_ttl: Duration,
    /// Lifetime of an access token (default [`OAUTH_ACCESS_TOKEN_TTL`]; zero: `expires_in: 0`
    /// and expired at once). `POST /v1/messages` answers 401 to it after that.
    pub access_token_ttl: Duration,
    /// Whether a refresh rotates the refresh token (default `true`). With `false` the answer
    /// has no `refresh_token` and the old one stays good (RFC 6749 §6 allows both).
    pub rotate_refresh_tokens: bool,
    /// Pause before answering a `refresh_token` grant (default zero). The refresh token is
    /// checked and rotated on arrival, so concurrent refreshes with one token are each recorded
    /// at once and all but the first get `invalid_grant`.
    pub refresh_delay: Duration,
    /// Answer every authorization request with an error on the redirect instead of a code, as
    /// when the user clicks "Deny" (default `false`).
    pub deny_authorize: bool,
    /// The `error` of a denied authorization (default `access_denied`, RFC 6749 §4.1.2.1).
    pub deny_error: String,
    /// The `error_description` of a denied authorization; put HTML in it to check that a client
    /// escapes what it shows.
    pub error_description: String,
    /// Make the token endpoint answer this HTTP status with `{"error":"server_error",…}` to every
    /// request, before looking at it (default `None`): an outage, not a refusal.
    pub token_endpoint_status: Option<u16>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            client_id: OAUTH_CLIENT_ID.to_owned(),
            client_secret: None,
            redirect_uris: Vec::new(),
            default_scope: OAUTH_DEFAULT_SCOPE.to_owned(),
            code_ttl: OAUTH_CODE_TTL,
            access_token_ttl: OAUTH_ACCESS_TOKEN_TTL,
            rotate_refresh_tokens: true,
            refresh_delay: Duration::ZERO,
            deny_authorize: false,
            deny_error: "access_denied".to_owned(),
            error_description: "The user denied the request.".to_owned(),
            token_endpoint_status: None,
        }
    }
}

/// One `GET /oauth/authorize` the provider received.
#[derive(Clone, Debug)]
pub struct AuthorizeRequest {
    /// The [`RecordedRequest::seq`] of the same request.
    pub seq: u64,
    /// When it arrived.
    pub at: Instant,
    /// The query parameters (the last one wins if a name is repeated, which is refused).
    pub params: BTreeMap<String, String>,
    /// The authorization code issued, if one was.
    pub code: Option<String>,
    /// The error sent instead, on the redirect or on an error page.
    pub error: Option<String>,
}

impl AuthorizeRequest {
    /// A query parameter by name (`state`, `code_challenge`, `redirect_uri`, …).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// How a client authenticated at the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Neither a `client_id` nor credentials.
    None,
    /// `client_id` in the body and no secret: a public client.
    ClientId,
    /// `client_id` and `client_secret` in the body.
    BodySecret,
    /// `Authorization: Basic`.
    Basic,
}

/// What the token endpoint answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOutcome {
    /// 200 with these tokens (RFC 6749 §5.1).
    Issued {
        /// The new access token.
        access_token: String,
        /// The new refresh token; `None` when a refresh did not rotate it.
        refresh_token: Option<String>,
        /// `expires_in`, in seconds.
        expires_in: u64,
        /// The granted scope, space-separated.
        scope: String,
    },
    /// An error answer (RFC 6749 §5.2).
    Refused {
        /// HTTP status: 400, 401 for `invalid_client`, or [`OAuthConfig::token_endpoint_status`].
        status: u16,
        /// The `error` code (`invalid_grant`, …).
        error: String,
        /// The `error_description`.
        description: String,
    },
}

/// One `POST /oauth/token` the provider received, with what it answered. Recorded when the
/// answer is decided, which for a slow refresh ([`OAuthConfig::refresh_delay`]) is before it is
/// sent.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The [`RecordedRequest::seq`] of the same request.
    pub seq: u64,
    /// When it arrived.
    pub at: Instant,
    /// The `grant_type` sent, if any.
    pub grant_type: Option<String>,
    /// The client id, from the Basic credentials or the body.
    pub client_id: Option<String>,
    /// How the client authenticated.
    pub client_auth: ClientAuth,
    /// The form parameters (secrets included: this is a test's view).
    pub params: BTreeMap<String, String>,
    /// The answer.
    pub outcome: TokenOutcome,
}

impl TokenRequest {
    /// A form parameter by name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// Whether this is a `refresh_token` grant.
    pub fn is_refresh(&self) -> bool {
        self.grant_type.as_deref() == Some("refresh_token")
    }

    /// Whether this is an `authorization_code` grant.
    pub fn is_code_exchange(&self) -> bool {
        self.grant_type.as_deref() == Some("authorization_code")
    }

    /// Whether tokens were issued.
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, TokenOutcome::Issued { .. })
    }

    /// The `error` code, if the request was refused.
    pub fn error(&self) -> Option<&str> {
        match &self.outcome {
            TokenOutcome::Issued { .. } => None,
            TokenOutcome::Refused { error, .. } => Some(error),
        }
    }

    /// The access token issued, if any.
    pub fn access_token(&self) -> Option<&str> {
        match &self.outcome {
            TokenOutcome::Issued { access_token, .. } => Some(access_token),
            TokenOutcome::Refused { .. } => None,
        }
    }

    /// The refresh token issued, if any.
    pub fn refresh_token(&self) -> Option<&str> {
        match &self.outcome {
            TokenOutcome::Issued { refresh_token, .. } => refresh_token.as_deref(),
            TokenOutcome::Refused { .. } => None,
        }
    }
}

/// What a browser would end up with after opening an authorization URL and clicking "Allow"
/// (or being denied): see [`MockApi::authorize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorizeOutcome {
    /// Callback mode: the provider redirected to the client's redirect URI with a code. Open
    /// `location` (sashad's callback) to finish the sign-in.
    Redirect {
        /// The whole `Location`, query included.
        location: String,
        /// Its `code`.
        code: String,
        /// Its `state`, if the request had one.
        state: Option<String>,
    },
    /// Paste mode: the provider's code page showed this text, `<code>#<state>` (just `<code>`
    /// when the request had no state), for the user to paste.
    PasteCode(String),
    /// The provider redirected with an error (RFC 6749 §4.1.2.1), in either mode.
    Error {
        /// The whole `Location`.
        location: String,
        /// Its `error`.
        error: String,
        /// Its `error_description`.
        description: Option<String>,
        /// Its `state`.
        state: Option<String>,
    },
    /// No redirect: an error page, for a bad `client_id` or `redirect_uri` (RFC 6749 §4.1.2.1
    /// forbids redirecting then), or anything else that was not a 302.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The page.
        body: String,
    },
}

/// `BASE64URL(SHA256(verifier))` without padding: the S256 `code_challenge` of a
/// `code_verifier` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

/// A fresh `code_verifier`: 32 random bytes, base64url, 43 characters (RFC 7636 §4.1).
pub fn new_pkce_verifier() -> String {
    random_token("")
}

impl MockApi {
    /// The client id the provider accepts ([`OAuthConfig::client_id`]).
    pub fn oauth_client_id(&self) -> String {
        self.state.lock().oauth.config.client_id.clone()
    }

    /// `<base>/oauth/authorize`: sashad's `oauth.authorize_url`.
    pub fn authorize_url(&self) -> String {
        format!("{}{OAUTH_AUTHORIZE_PATH}", self.base_url())
    }

    /// `<base>/oauth/token`: sashad's `oauth.token_url`.
    pub fn token_url(&self) -> String {
        format!("{}{OAUTH_TOKEN_PATH}", self.base_url())
    }

    /// `<base>/oauth/code`: the redirect URI of paste mode, the provider's own page that shows
    /// `code#state` for the user to copy.
    pub fn paste_redirect_uri(&self) -> String {
        format!("{}{OAUTH_CODE_PAGE_PATH}", self.base_url())
    }

    /// The provider's current configuration.
    pub fn oauth_config(&self) -> OAuthConfig {
        self.state.lock().oauth.config.clone()
    }

    /// Replaces the provider's configuration; codes and tokens already issued stay as they are.
    pub fn set_oauth_config(&self, config: OAuthConfig) {
        self.state.lock().oauth.config = config;
    }

    /// Revokes every refresh token issued so far, as when the user signs out everywhere: each
    /// gets `invalid_grant` from now on. Access tokens are not touched; tokens issued later work.
    pub fn revoke_refresh_tokens(&self) {
        for refresh in self.state.lock().oauth.refresh_tokens.values_mut() {
            refresh.status = RefreshStatus::Revoked;
        }
    }

    /// Revokes the refresh tokens of the grant this refresh token belongs to (every rotation of
    /// one sign-in), leaving other sign-ins alone. `false` if the provider never issued it.
    pub fn revoke_refresh_token(&self, refresh_token: &str) -> bool {
        let mut inner = self.state.lock();
        let oauth = &mut inner.oauth;
        let Some(grant) = oauth.refresh_tokens.get(refresh_token).map(|r| r.grant) else {
            return false;
        };
        for refresh in oauth.refresh_tokens.values_mut() {
            if refresh.grant == grant {
                refresh.status = RefreshStatus::Revoked;
            }
        }
        true
    }

    /// Makes an access token the provider issued expire now: `POST /v1/messages` answers it 401
    /// [`OAUTH_EXPIRED_MESSAGE`]. `false` if the provider never issued it (to make any other
    /// credential fail, use [`MockApi::reject_messages_for`]).
    pub fn expire_access_token(&self, access_token: &str) -> bool {
        let now = Instant::now();
        match self.state.lock().oauth.access_tokens.get_mut(access_token) {
            Some(access) => {
                access.expires_at = access.expires_at.min(now);
                true
            }
            None => false,
        }
    }

    /// [`MockApi::expire_access_token`] for every access token issued so far.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for access in self.state.lock().oauth.access_tokens.values_mut() {
            access.expires_at = access.expires_at.min(now);
        }
    }

    /// Every access token issued so far, oldest first.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.state.lock().oauth.issued_access.clone()
    }

    /// Every authorization request received so far, in arrival order.
    pub fn authorize_requests(&self) -> Vec<AuthorizeRequest> {
        self.state.lock().oauth.authorize_log.clone()
    }

    /// Every token request received so far, in arrival order, with its outcome.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.state.lock().oauth.token_log.clone()
    }

    /// Waits until at least `n` token requests are recorded (decided, perhaps not yet sent: see
    /// [`TokenRequest`]); returns them all.
    pub async fn wait_for_token_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<TokenRequest>, WaitTimeout> {
        self.wait_until(
            |inner| {
                let log = &inner.oauth.token_log;
                (log.len() >= n).then(|| log.clone())
            },
            timeout,
        )
        .await
    }

    /// Plays the browser: opens `url` (an authorization URL, as sashad's `authUrl`) and reports
    /// where the provider sent it. In paste mode it also opens the code page and reads the code
    /// from it. Does not open the client's callback; a test does that with
    /// [`AuthorizeOutcome::Redirect`]'s `location`.
    ///
    /// # Panics
    /// If the request fails in transport, or the code page has no code: a failed test.
    #[allow(clippy::expect_used)] // test support: no answer from the mock is a failed test
    pub async fn authorize(&self, url: &str) -> AuthorizeOutcome {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build an HTTP client");
        let resp = client
            .get(url)
            .send()
            .await
            .expect("GET the authorization URL");
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (Some(location), 302) = (location, status) else {
            let body = resp.text().await.unwrap_or_default();
            return AuthorizeOutcome::Refused { status, body };
        };
        let target = reqwest::Url::parse(&location).expect("the Location is an absolute URL");
        let query: HashMap<String, String> = target.query_pairs().into_owned().collect();
        let state = query.get("state").cloned();
        if let Some(error) = query.get("error") {
            return AuthorizeOutcome::Error {
                error: error.clone(),
                description: query.get("error_description").cloned(),
                state,
                location,
            };
        }
        let mut bare = target.clone();
        bare.set_query(None);
        if bare.as_str() == self.paste_redirect_uri() {
            let page = client
                .get(target)
                .send()
                .await
                .expect("GET the code page")
                .text()
                .await
                .expect("read the code page");
            let shown = shown_code(&page).expect("the code page shows a code");
            return AuthorizeOutcome::PasteCode(shown);
        }
        let code = query
            .get("code")
            .cloned()
            .expect("a redirect without an error carries a code");
        AuthorizeOutcome::Redirect {
            location,
            code,
            state,
        }
    }
}

/// The provider's state: its configuration, what it issued, and what it received.
#[derive(Default)]
struct OAuth {
    config: OAuthConfig,
    codes: HashMap<String, AuthCode>,
    /// One per successful code exchange; tokens point here by index.
    grants: Vec<Grant>,
    refresh_tokens: HashMap<String, Refresh>,
    access_tokens: HashMap<String, Access>,
    issued_access: Vec<String>,
    authorize_log: Vec<AuthorizeRequest>,
    token_log: Vec<TokenRequest>,
}

/// An authorization code and what it is bound to (RFC 6749 §4.1.2, RFC 7636 §4.4).
struct AuthCode {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    expires_at: Instant,
    /// Whether an exchange was attempted: one attempt per code, successful or not.
    used: bool,
    /// The grant it produced, revoked if the code is presented again (RFC 6749 §4.1.2).
    grant: Option<usize>,
}

/// One sign-in: what the client was granted.
struct Grant {
    client_id: String,
    scope: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RefreshStatus {
    Live,
    Rotated,
    Revoked,
}

struct Refresh {
    grant: usize,
    status: RefreshStatus,
}

struct Access {
    grant: usize,
    expires_at: Instant,
    revoked: bool,
}

/// A refusal of the authorization endpoint.
enum AuthorizeError {
    /// Shown on a page: the redirect URI cannot be trusted (RFC 6749 §4.1.2.1).
    Page(&'static str, String),
    /// Sent to the redirect URI.
    Redirect(String, String),
}

/// A refusal of the token endpoint (RFC 6749 §5.2).
struct TokenError {
    status: u16,
    error: &'static str,
    description: String,
}

impl TokenError {
    fn new(error: &'static str, description: impl Into<String>) -> TokenError {
        // RFC 6749 §5.2: 401 for `invalid_client` (and then `WWW-Authenticate`), else 400.
        let status = if error == "invalid_client" { 401 } else { 400 };
        TokenError {
            status,
            error,
            description: description.into(),
        }
    }
}

/// Tokens the token endpoint issued.
struct Issued {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: u64,
    scope: String,
}

impl From<Issued> for TokenOutcome {
    fn from(issued: Issued) -> TokenOutcome {
        TokenOutcome::Issued {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            expires_in: issued.expires_in,
            scope: issued.scope,
        }
    }
}

/// The token endpoint's success answer (RFC 6749 §5.1), fields in the RFC's order.
#[derive(serde::Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    scope: &'a str,
}

/// The token endpoint's error answer (RFC 6749 §5.2).
#[derive(serde::Serialize)]
struct TokenErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

/// `prefix` and 32 random bytes in base64url: codes and tokens.
fn random_token(prefix: &str) -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Parses `application/x-www-form-urlencoded` text (a query or a form body) into a map, and
/// names the first parameter that is repeated (RFC 6749 §3.1, §3.2 forbid repeats).
fn parse_form(text: &str) -> (BTreeMap<String, String>, Option<String>) {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(text)
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let mut map = BTreeMap::new();
    let mut repeated = None;
    for (name, value) in pairs {
        if map.contains_key(&name) && repeated.is_none() {
            repeated = Some(name.clone());
        }
        map.insert(name, value);
    }
    (map, repeated)
}

/// Whether `s` is a PKCE verifier or challenge: 43 to 128 characters of
/// `[A-Za-z0-9-._~]` (RFC 7636 §4.1, §4.2).
fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Whether `scope` is a space-separated list of RFC 6749 §3.3 scope tokens.
fn is_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.split(' ').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        })
}

/// The text of the code page's `<pre id="code">`, unescaped.
fn shown_code(page: &str) -> Option<String> {
    let (_, rest) = page.split_once(r#"<pre id="code">"#)?;
    let (code, _) = rest.split_once("</pre>")?;
    Some(html_escape::decode_html_entities(code).into_owned())
}

/// A small HTML page; `body` is HTML already escaped.
fn html_page(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
             <body><h1>{title}</h1>\n{body}\n</body></html>\n"
        ))
}

fn error_page(error: &str, description: &str) -> HttpResponse {
    html_page(
        StatusCode::BAD_REQUEST,
        "Mock OAuth: authorization failed",
        &format!(
            "<p id=\"error\">{}</p>\n<p id=\"error_description\">{}</p>",
            html_escape::encode_safe(error),
            html_escape::encode_safe(description)
        ),
    )
}

/// A 302 to `redirect_uri` with `params` added to its query, which it keeps (RFC 6749 §3.1.2).
fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> HttpResponse {
    let Ok(mut url) = reqwest::Url::parse(redirect_uri) else {
        return error_page("invalid_request", "redirect_uri is not an absolute URI");
    };
    url.query_pairs_mut().extend_pairs(params);
    HttpResponse::Found()
        .insert_header((header::LOCATION, url.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

impl OAuth {
    /// Checks an authorization request and issues a code, or says how to refuse it.
    fn authorize(
        &mut self,
        p: &BTreeMap<String, String>,
        repeated: Option<&str>,
        now: Instant,
    ) -> Result<String, AuthorizeError> {
        let config = &self.config;
        let page = |description: &str| AuthorizeError::Page("invalid_request", description.into());
        if let Some(name @ ("client_id" | "redirect_uri")) = repeated {
            return Err(page(&format!(
                "parameter {name} is repeated (RFC 6749 §3.1)"
            )));
        }
        let client_id = p
            .get("client_id")
            .ok_or_else(|| page("client_id is missing"))?;
        if *client_id != config.client_id {
            return Err(AuthorizeError::Page(
                "invalid_client",
                format!("unknown client_id {client_id:?}"),
            ));
        }
        let redirect_uri = p
            .get("redirect_uri")
            .ok_or_else(|| page("redirect_uri is missing"))?;
        match reqwest::Url::parse(redirect_uri) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.fragment().is_none() => {}
            _ => {
                return Err(page(
                    "redirect_uri must be an absolute http(s) URI without a fragment",
                ))
            }
        }
        if !config.redirect_uris.is_empty() && !config.redirect_uris.contains(redirect_uri) {
            return Err(page("redirect_uri is not registered for this client"));
        }
        // From here on the redirect URI is trusted, so errors go to it (RFC 6749 §4.1.2.1).
        let refuse = |error: &str, description: &str| {
            Err(AuthorizeError::Redirect(error.into(), description.into()))
        };
        if let Some(name) = repeated {
            return refuse(
                "invalid_request",
                &format!("parameter {name} is repeated (RFC 6749 §3.1)"),
            );
        }
        match p.get("response_type").map(String::as_str) {
            Some("code") => {}
            None => return refuse("invalid_request", "response_type is missing"),
            Some(_) => {
                return refuse(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                )
            }
        }
        let Some(challenge) = p.get("code_challenge") else {
            return refuse(
                "invalid_request",
                "code_challenge is required (RFC 7636 §4.4.1)",
            );
        };
        if p.get("code_challenge_method").map(String::as_str) != Some("S256") {
            return refuse(
                "invalid_request",
                "transform algorithm not supported: code_challenge_method must be S256",
            );
        }
        if challenge.len() != 43 || !is_pkce_string(challenge) {
            return refuse(
                "invalid_request",
                "code_challenge must be 43 base64url characters (RFC 7636 §4.2)",
            );
        }
        let scope = p.get("scope").unwrap_or(&config.default_scope);
        if !is_scope(scope) {
            return refuse("invalid_scope", "scope is malformed (RFC 6749 §3.3)");
        }
        if config.deny_authorize {
            return refuse(&config.deny_error, &config.error_description);
        }
        let code = random_token("mock-code-");
        let bound = AuthCode {
            client_id: client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            challenge: challenge.clone(),
            scope: scope.clone(),
            expires_at: now + config.code_ttl,
            used: false,
            grant: None,
        };
        self.codes.insert(code.clone(), bound);
        Ok(code)
    }

    /// Answers a token request: authenticates the client, then runs the grant.
    fn token(
        &mut self,
        req: &HttpRequest,
        body: &[u8],
        entry: &mut TokenRequest,
        now: Instant,
    ) -> Result<Issued, TokenError> {
        let form = header_str(req, "content-type")
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|ct| {
                ct.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        let text = std::str::from_utf8(body).ok();
        let (params, repeated) = match text {
            Some(text) if form => parse_form(text),
            _ => Default::default(),
        };
        entry.params = params.clone();
        entry.grant_type = params.get("grant_type").cloned();
        if let Some(status) = self.config.token_endpoint_status {
            return Err(TokenError {
                status,
                error: "server_error",
                description: "the token endpoint is failing (test setting)".into(),
            });
        }
        if !form {
            return Err(TokenError::new(
                "invalid_request",
                "the body must be application/x-www-form-urlencoded (RFC 6749 §4.1.3)",
            ));
        }
        if text.is_none() {
            return Err(TokenError::new("invalid_request", "the body is not UTF-8"));
        }
        if let Some(name) = repeated {
            return Err(TokenError::new(
                "invalid_request",
                format!("parameter {name} is repeated (RFC 6749 §3.2)"),
            ));
        }
        let client_id = self.authenticate_client(req, &params, entry)?;
        match params.get("grant_type").map(String::as_str) {
            None => Err(TokenError::new("invalid_request", "grant_type is missing")),
            Some("authorization_code") => self.exchange_code(&client_id, &params, now),
            Some("refresh_token") => self.refresh(&client_id, &params, now),
            Some(other) => Err(TokenError::new(
                "unsupported_grant_type",
                format!("grant_type {other:?} is not supported"),
            )),
        }
    }

    /// Client authentication (RFC 6749 §2.3.1): HTTP Basic with the form-encoded id and secret,
    /// or `client_id` (and `client_secret`) in the body; not both kinds of credentials.
    fn authenticate_client(
        &self,
        req: &HttpRequest,
        params: &BTreeMap<String, String>,
        entry: &mut TokenRequest,
    ) -> Result<String, TokenError> {
        use base64::Engine as _;
        let failed = |description: &str| TokenError::new("invalid_client", description);
        let basic = match header_str(req, "authorization").and_then(|v| v.split_once(' ')) {
            Some((scheme, encoded)) if scheme.eq_ignore_ascii_case("basic") => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                    return Err(failed("malformed Basic credentials"));
                };
                Some((form_decode(id), form_decode(secret)))
            }
            _ => None,
        };
        let body_id = params.get("client_id");
        let body_secret = params.get("client_secret");
        entry.client_auth = match (&basic, body_secret, body_id) {
            (Some(_), _, _) => ClientAuth::Basic,
            (None, Some(_), _) => ClientAuth::BodySecret,
            (None, None, Some(_)) => ClientAuth::ClientId,
            (None, None, None) => ClientAuth::None,
        };
        if basic.is_some() && body_secret.is_some() {
            return Err(TokenError::new(
                "invalid_request",
                "more than one client authentication method (RFC 6749 §2.3)",
            ));
        }
        let (id, secret) = match basic {
            Some((id, secret)) => {
                if body_id.is_some_and(|b| *b != id) {
                    return Err(failed("client_id differs from the Basic credentials"));
                }
                (id, Some(secret))
            }
            None => match body_id {
                Some(id) => (id.clone(), body_secret.cloned()),
                None => return Err(failed("no client_id and no client authentication")),
            },
        };
        entry.client_id = Some(id.clone());
        if id != self.config.client_id {
            return Err(failed("unknown client"));
        }
        match (&self.config.client_secret, secret.as_deref()) {
            (Some(expected), Some(given)) if expected == given => Ok(id),
            (Some(_), _) => Err(failed("client authentication failed")),
            (None, None | Some("")) => Ok(id),
            (None, Some(_)) => Err(failed("this client is public and has no secret")),
        }
    }

    /// The `authorization_code` grant (RFC 6749 §4.1.3, RFC 7636 §4.5, §4.6).
    fn exchange_code(
        &mut self,
        client_id: &str,
        params: &BTreeMap<String, String>,
        now: Instant,
    ) -> Result<Issued, TokenError> {
        let missing = |name: &str| TokenError::new("invalid_request", format!("{name} is missing"));
        let code = params.get("code").ok_or_else(|| missing("code"))?;
        let redirect_uri = params
            .get("redirect_uri")
            .ok_or_else(|| missing("redirect_uri"))?;
        let verifier = params
            .get("code_verifier")
            .ok_or_else(|| missing("code_verifier"))?;
        if !is_pkce_string(verifier) {
            return Err(TokenError::new(
                "invalid_request",
                "code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636 §4.1)",
            ));
        }
        let invalid = |description: &str| TokenError::new("invalid_grant", description);
        let Some(bound) = self.codes.get_mut(code) else {
            return Err(invalid("unknown authorization code"));
        };
        if bound.client_id != client_id {
            return Err(invalid("the code was issued to another client"));
        }
        if bound.used {
            if let Some(grant) = bound.grant {
                self.revoke_grant(grant);
            }
            return Err(invalid(
                "the code was already used; tokens issued with it are revoked (RFC 6749 §4.1.2)",
            ));
        }
        bound.used = true;
        if now >= bound.expires_at {
            return Err(invalid("the code has expired"));
        }
        if bound.redirect_uri != *redirect_uri {
            return Err(invalid(
                "redirect_uri differs from the authorization request's (RFC 6749 §4.1.3)",
            ));
        }
        if pkce_challenge(verifier) != bound.challenge {
            return Err(invalid(
                "code_verifier does not match the code_challenge (RFC 7636 §4.6)",
            ));
        }
        let grant = self.grants.len();
        bound.grant = Some(grant);
        let scope = bound.scope.clone();
        self.grants.push(Grant {
            client_id: client_id.to_owned(),
            scope: scope.clone(),
        });
        Ok(self.issue(grant, scope, true, now))
    }

    /// The `refresh_token` grant (RFC 6749 §6), rotating the refresh token if configured.
    fn refresh(
        &mut self,
        client_id: &str,
        params: &BTreeMap<String, String>,
        now: Instant,
    ) -> Result<Issued, TokenError> {
        let Some(token) = params.get("refresh_token") else {
            return Err(TokenError::new(
                "invalid_request",
                "refresh_token is missing",
            ));
        };
        let invalid = |description: &str| TokenError::new("invalid_grant", description);
        let Some(refresh) = self.refresh_tokens.get(token) else {
            return Err(invalid("unknown refresh token"));
        };
        match refresh.status {
            RefreshStatus::Live => {}
            RefreshStatus::Rotated => {
                return Err(invalid(
                    "the refresh token was already used and has been rotated",
                ))
            }
            RefreshStatus::Revoked => return Err(invalid("the refresh token has been revoked")),
        }
        let grant_id = refresh.grant;
        let Some(grant) = self.grants.get(grant_id) else {
            return Err(invalid("unknown grant"));
        };
        if grant.client_id != client_id {
            return Err(invalid("the refresh token was issued to another client"));
        }
        let scope = match params.get("scope") {
            None => grant.scope.clone(),
            Some(asked) => {
                let granted: Vec<&str> = grant.scope.split(' ').collect();
                if !is_scope(asked) || !asked.split(' ').all(|s| granted.contains(&s)) {
                    return Err(TokenError::new(
                        "invalid_scope",
                        "scope exceeds the original grant (RFC 6749 §6)",
                    ));
                }
                asked.clone()
            }
        };
        let rotate = self.config.rotate_refresh_tokens;
        if rotate {
            if let Some(old) = self.refresh_tokens.get_mut(token) {
                old.status = RefreshStatus::Rotated;
            }
        }
        Ok(self.issue(grant_id, scope, rotate, now))
    }

    fn issue(&mut self, grant: usize, scope: String, with_refresh: bool, now: Instant) -> Issued {
        let ttl = self.config.access_token_ttl;
        let access_token = random_token("sk-ant-oat01-mock-");
        self.access_tokens.insert(
            access_token.clone(),
            Access {
                grant,
                expires_at: now + ttl,
                revoked: false,
            },
        );
        self.issued_access.push(access_token.clone());
        let refresh_token = with_refresh.then(|| {
            let token = random_token("sk-ant-ort01-mock-");
            self.refresh_tokens.insert(
                token.clone(),
                Refresh {
                    grant,
                    status: RefreshStatus::Live,
                },
            );
            token
        });
        Issued {
            access_token,
            refresh_token,
            expires_in: ttl.as_secs(),
            scope,
        }
    }

    fn revoke_grant(&mut self, grant: usize) {
        for refresh in self.refresh_tokens.values_mut() {
            if refresh.grant == grant {
                refresh.status = RefreshStatus::Revoked;
            }
        }
        for access in self.access_tokens.values_mut() {
            if access.grant == grant {
                access.revoked = true;
            }
        }
    }

    /// Why `POST /v1/messages` refuses this credential, if it is an access token the provider
    /// issued that has expired or been revoked. Other credentials are not its business.
    fn messages_refusal(&self, credential: &str, now: Instant) -> Option<&'static str> {
        let access = self.access_tokens.get(credential)?;
        if access.revoked {
            Some(OAUTH_REVOKED_MESSAGE)
        } else if now >= access.expires_at {
            Some(OAUTH_EXPIRED_MESSAGE)
        } else {
            None
        }
    }
}

/// Decodes one `application/x-www-form-urlencoded` value (the Basic credentials' halves).
fn form_decode(text: &str) -> String {
    parse_form(&format!("v={text}"))
        .0
        .remove("v")
        .unwrap_or_default()
}

async fn oauth_authorize(req: HttpRequest, body: web::Bytes, state: Data) -> HttpResponse {
    let seq = state.record(&req, &body);
    let now = Instant::now();
    let (params, repeated) = parse_form(req.query_string());
    let mut entry = AuthorizeRequest {
        seq,
        at: now,
        params,
        code: None,
        error: None,
    };
    let resp = {
        let mut inner = state.lock();
        let oauth = &mut inner.oauth;
        let result = oauth.authorize(&entry.params, repeated.as_deref(), now);
        let mut back: Vec<(&str, &str)> = match &result {
            Ok(code) => vec![("code", code.as_str())],
            Err(AuthorizeError::Redirect(error, description)) => vec![
                ("error", error.as_str()),
                ("error_description", description.as_str()),
            ],
            Err(AuthorizeError::Page(..)) => Vec::new(),
        };
        let resp = if let Err(AuthorizeError::Page(error, description)) = &result {
            error_page(error, description)
        } else {
            if let Some(s) = entry.params.get("state") {
                back.push(("state", s.as_str()));
            }
            let redirect_uri = entry.params.get("redirect_uri").map_or("", String::as_str);
            redirect_with(redirect_uri, &back)
        };
        drop(back);
        match result {
            Ok(code) => entry.code = Some(code),
            Err(AuthorizeError::Redirect(error, _)) => entry.error = Some(error),
            Err(AuthorizeError::Page(error, _)) => entry.error = Some(error.to_owned()),
        }
        oauth.authorize_log.push(entry);
        resp
    };
    state.answered(seq, resp)
}

/// The provider's own page for paste mode: shows `code#state` (or the error) to copy.
async fn oauth_code_page(req: HttpRequest, body: web::Bytes, state: Data) -> HttpResponse {
    let seq = state.record(&req, &body);
    let (params, _) = parse_form(req.query_string());
    let resp = match (params.get("code"), params.get("error")) {
        (_, Some(error)) => error_page(
            error,
            params.get("error_description").map_or("", String::as_str),
        ),
        (Some(code), None) => {
            let shown = match params.get("state") {
                Some(s) => format!("{code}#{s}"),
                None => code.clone(),
            };
            html_page(
                StatusCode::OK,
                "Mock OAuth: authorization code",
                &format!(
                    "<p>Paste this code into the application:</p>\n<pre id=\"code\">{}</pre>",
                    html_escape::encode_safe(&shown)
                ),
            )
        }
        (None, None) => error_page("invalid_request", "no code and no error"),
    };
    state.answered(seq, resp)
}

async fn oauth_token(req: HttpRequest, body: web::Bytes, state: Data) -> HttpResponse {
    let seq = state.record(&req, &body);
    let now = Instant::now();
    let (resp, delay) = {
        let mut inner = state.lock();
        let oauth = &mut inner.oauth;
        let mut entry = TokenRequest {
            seq,
            at: now,
            grant_type: None,
            client_id: None,
            client_auth: ClientAuth::None,
            params: BTreeMap::new(),
            outcome: TokenOutcome::Refused {
                status: 0,
                error: String::new(),
                description: String::new(),
            },
        };
        let result = oauth.token(&req, &body, &mut entry, now);
        let resp = match &result {
            Ok(issued) => HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header((header::PRAGMA, "no-cache"))
                .json(TokenBody {
                    access_token: &issued.access_token,
                    token_type: "Bearer",
                    expires_in: issued.expires_in,
                    refresh_token: issued.refresh_token.as_deref(),
                    scope: &issued.scope,
                }),
            Err(err) => {
                let status =
                    StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut resp = HttpResponse::build(status);
                resp.insert_header((header::CACHE_CONTROL, "no-store"))
                    .insert_header((header::PRAGMA, "no-cache"));
                if err.error == "invalid_client" {
                    resp.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"mock-oauth\""));
                }
                resp.json(TokenErrorBody {
                    error: err.error,
                    error_description: &err.description,
                })
            }
        };
        entry.outcome = match result {
            Ok(issued) => issued.into(),
            Err(err) => TokenOutcome::Refused {
                status: err.status,
                error: err.error.to_owned(),
                description: err.description,
            },
        };
        let delay = if entry.is_refresh() {
            oauth.config.refresh_delay
        } else {
            Duration::ZERO
        };
        oauth.token_log.push(entry);
        (resp, delay)
    };
    state.notify();
    if !delay.is_zero() {
        actix_rt::time::sleep(delay).await;
    }
    state.answered(seq, resp)
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
