//! `GET /ws/sessions/{id}?after=N`: a session's events over a WebSocket (DESIGN §5), with
//! `actix-ws`.
//!
//! The connection is authenticated like any request (bearer header or cookie; never a token in
//! the URL), and a cookie-authenticated upgrade needs an allowed `Origin` (a page on another
//! site could otherwise open it with the user's cookie). Errors (401, 403, 404) answer before
//! the upgrade.
//!
//! Each socket is one task, not an actor: it sends the replay (after a `gap` frame when the ring
//! has dropped some of what was asked for), then loops over the session's live frames, the
//! client's messages and a heartbeat. Its queue belongs to the session's fan-out; when the
//! session drops it for being too slow, the task closes with 1013 at once. Client messages are
//! reassembled from fragments up to `sessions.max_message_bytes`; past that the socket closes
//! with 1009. A ping goes out every `websocket.ping_interval`, and a client silent for
//! `websocket.client_timeout` is dropped.

use std::time::Duration;

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError};
use bytestring::ByteString;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::auth::{authenticate, check_origin, AuthVia};
use super::AppState;
use crate::error::Error;
use crate::metrics::metrics;
use crate::supervisor::fanout::{QueueCaps, SubscriberRx};
use crate::supervisor::frame;
use crate::supervisor::session::{Interrupt, SendMessage, Session, Subscribe, Subscribed};
use crate::supervisor::SessionError;

/// Client commands one socket may have waiting for the session's answer, and again as many
/// waiting to be handed over, before it is closed (1008).
const COMMANDS_IN_FLIGHT: usize = 16;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws/sessions/{id}", web::get().to(connect));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    #[serde(default)]
    after: u64,
}

async fn connect(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Error> {
    let authed = authenticate(&req, &state).await?;
    // Parsed only once the caller is known: a request without credentials gets 401 whatever
    // its query, so `?token=…` reads as what it is, an unauthenticated request.
    let query = web::Query::<Query>::from_query(req.query_string())
        .map_err(|e| Error::bad_request("invalid_query", e.to_string()))?;
    // Browsers always send Origin on WebSocket upgrades; a cookie alone is not enough.
    check_origin(&req, &state, authed.via == AuthVia::Cookie)?;
    let addr = super::sessions::find(&state, &authed, &path).await?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| Error::bad_request("not_a_websocket", e.to_string()))?;
    let settings = state.settings.get();
    let caps = QueueCaps {
        frames: settings.websocket.queue_frames,
        bytes: settings.websocket.queue_bytes,
    };
    let Subscribed { replay, live } = addr
        .send(Subscribe {
            after: query.after,
            caps,
        })
        .await
        .map_err(|_| SessionError::NotFound)??;
    let max = settings.sessions.max_message_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let heartbeat = Heartbeat {
        ping_interval: settings.websocket.ping_interval,
        client_timeout: settings.websocket.client_timeout,
    };
    let session_id = path.into_inner();
    tracing::debug!(%session_id, user_id = %authed.user.id, after = query.after, "socket connected");
    actix_web::rt::spawn(async move {
        let _open = SocketGauge::open();
        let mut first = replay
            .gap
            .map(|(from, to)| frame::gap(from, to))
            .into_iter()
            .collect::<Vec<_>>();
        first.extend(replay.frames);
        let end = run(session.clone(), stream, first, live, addr, heartbeat).await;
        tracing::debug!(%session_id, reason = end.description, "socket closed");
        if end.code == CloseCode::Again {
            metrics().sockets_closed_slow.inc();
        }
        // The close frame queues behind the frames already handed to actix-ws. A client dropped
        // for not reading gets it, and so learns to reconnect with `after`, when it reads again;
        // one that stays away longer would have been dropped as silent anyway.
        let _ =
            tokio::time::timeout(heartbeat.client_timeout, session.close(Some(end.into()))).await;
    });
    Ok(response)
}

#[derive(Clone, Copy)]
struct Heartbeat {
    ping_interval: Duration,
    client_timeout: Duration,
}

/// How and why a socket ends.
struct End {
    code: CloseCode,
    description: &'static str,
}

impl From<End> for CloseReason {
    fn from(end: End) -> Self {
        CloseReason {
            code: end.code,
            description: Some(end.description.to_owned()),
        }
    }
}

const fn end(code: CloseCode, description: &'static str) -> End {
    End { code, description }
}

const TOO_SLOW: End = end(
    CloseCode::Again,
    "too slow: reconnect with ?after=<last seq>",
);
const SILENT: End = end(
    CloseCode::Away,
    "no pong or message within the client timeout",
);
const GONE: End = end(CloseCode::Normal, "client gone");

/// The socket loop. Returns how it ends; the caller sends the close frame.
async fn run(
    mut ws: actix_ws::Session,
    mut stream: AggregatedMessageStream,
    first: Vec<ByteString>,
    mut live: SubscriberRx,
    addr: Addr<Session>,
    heartbeat: Heartbeat,
) -> End {
    let mut last_heard = Instant::now();
    // One waiter for the whole socket, registered once: a fresh one per frame would take the
    // Notify's lock twice per frame.
    let overflow = live.overflow();
    let too_slow = overflow.wait();
    tokio::pin!(too_slow);
    for frame in first {
        if let Err(end) = send(&mut ws, frame, too_slow.as_mut(), last_heard, heartbeat).await {
            return end;
        }
    }
    let (commands, rx) = mpsc::channel(COMMANDS_IN_FLIGHT);
    actix_web::rt::spawn(forward_commands(rx, addr, ws.clone()));
    let mut ping = tokio::time::interval(heartbeat.ping_interval);
    ping.tick().await;
    loop {
        tokio::select! {
            biased;
            () = &mut too_slow => return TOO_SLOW,
            frame = live.recv() => match frame {
                Some(frame) => {
                    if let Err(end) = send(&mut ws, frame, too_slow.as_mut(), last_heard, heartbeat).await {
                        return end;
                    }
                }
                None if live.is_overflowed() => return TOO_SLOW,
                None => return end(CloseCode::Away, "the session ended"),
            },
            message = stream.recv() => {
                last_heard = Instant::now();
                match message {
                    None => return GONE,
                    Some(Ok(AggregatedMessage::Text(text))) => match parse_command(&text) {
                        Ok(command) => {
                            if commands.try_send(command).is_err() {
                                return end(CloseCode::Policy, "too many messages in flight");
                            }
                        }
                        Err(problem) => {
                            let _ = ws.text(client_error("invalid_message", problem)).await;
                        }
                    },
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        return end(CloseCode::Unsupported, "send JSON text frames");
                    }
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        let _ = ws.pong(&bytes).await;
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(_))) => return GONE,
                    Some(Err(e)) => return protocol_end(&e),
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= heartbeat.client_timeout {
                    return SILENT;
                }
                if ws.ping(b"").await.is_err() {
                    return GONE;
                }
            }
        }
    }
}

/// Sends one frame, giving up when the session drops this socket as too slow or the client
/// has been silent past its timeout (a client that stopped reading blocks the send).
async fn send(
    ws: &mut actix_ws::Session,
    frame: ByteString,
    too_slow: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    last_heard: Instant,
    heartbeat: Heartbeat,
) -> Result<(), End> {
    let len = frame.len() as u64;
    tokio::select! {
        // The send first: when it is ready at once (actix-ws has room), nothing else is polled.
        biased;
        result = ws.text(frame) => {
            result.map_err(|_| GONE)?;
            metrics().events_relayed.inc();
            metrics().bytes_relayed.inc_by(len);
            Ok(())
        }
        () = too_slow => Err(TOO_SLOW),
        () = tokio::time::sleep_until(last_heard + heartbeat.client_timeout) => Err(SILENT),
    }
}

fn protocol_end(error: &ProtocolError) -> End {
    match error {
        ProtocolError::Overflow => end(CloseCode::Size, "message too big"),
        ProtocolError::Io(e) if e.to_string().contains("maximum continuation size") => {
            end(CloseCode::Size, "message too big")
        }
        _ => end(CloseCode::Protocol, "protocol error"),
    }
}

/// Counts an open socket for its whole life, whichever way it ends.
struct SocketGauge;

impl SocketGauge {
    fn open() -> Self {
        metrics().sockets_open.inc();
        Self
    }
}

impl Drop for SocketGauge {
    fn drop(&mut self) {
        metrics().sockets_open.dec();
    }
}

/// A client command.
#[derive(Debug)]
enum Command {
    User(Value),
    Interrupt,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum ClientMessage {
    User { content: Value },
    Interrupt {},
}

fn parse_command(text: &str) -> Result<Command, &'static str> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::User { content }) => Ok(Command::User(content)),
        Ok(ClientMessage::Interrupt {}) => Ok(Command::Interrupt),
        Err(_) => Err("expected {\"type\":\"user\",\"content\":…} or {\"type\":\"interrupt\"}"),
    }
}

/// An error meant for this socket only (no `seq`: it is not part of the session's history).
fn client_error(code: &str, message: &str) -> ByteString {
    ByteString::from(json!({"type": "error", "error": code, "message": message}).to_string())
}

/// Hands a socket's commands to its session in order, without waiting for one answer before
/// sending the next: a message that must start a child is answered only once the child has
/// started, and the messages behind it belong in the session's queue meanwhile (echoed to every
/// tab at once, bounded by `sessions.queued_messages`), not held back here. Reports refusals
/// that the session does not broadcast itself (a refused start is an `error` event for every
/// tab already).
async fn forward_commands(
    mut rx: mpsc::Receiver<Command>,
    addr: Addr<Session>,
    mut ws: actix_ws::Session,
) {
    let mut answers = FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            command = rx.recv(), if open && answers.len() < COMMANDS_IN_FLIGHT => match command {
                Some(command) => answers.push_back(dispatch(&addr, command)),
                None => open = false,
            },
            // Awaited to the last even once the socket has gone: a command that met a full
            // mailbox is only sent when its answer is polled.
            Some(result) = answers.next() => report(&mut ws, result).await,
            else => return,
        }
    }
}

/// Sends `command` to the session now: actix puts it in the mailbox at once (unless the
/// mailbox is full), so commands keep the socket's order while their answers are awaited later.
fn dispatch(
    addr: &Addr<Session>,
    command: Command,
) -> BoxFuture<'static, Result<(), SessionError>> {
    match command {
        Command::User(content) => {
            let answer = addr.send(SendMessage { content });
            Box::pin(async move {
                answer
                    .await
                    .map_err(|_| SessionError::NotFound)?
                    .map(|_| ())
            })
        }
        Command::Interrupt => {
            let answer = addr.send(Interrupt);
            Box::pin(async move { answer.await.map_err(|_| SessionError::NotFound)? })
        }
    }
}

/// Tells this socket alone about a refusal that the session did not broadcast.
async fn report(ws: &mut actix_ws::Session, result: Result<(), SessionError>) {
    let Err(error) = result else { return };
    let local = matches!(
        error,
        SessionError::QueueFull
            | SessionError::InvalidMessage(_)
            | SessionError::NotBusy
            | SessionError::ShuttingDown
            | SessionError::NotFound
    );
    if local {
        // A closed socket has no one to tell.
        let _ = ws
            .text(client_error(error.code(), &error.to_string()))
            .await;
    }
}
