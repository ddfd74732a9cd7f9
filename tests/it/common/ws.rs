//! A WebSocket client for session sockets, as a browser tab would use one, with waits that end
//! on frames (or a deadline), never on sleeps.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The default wait for a frame.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(30);

/// One socket.
pub struct Socket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every frame received so far, parsed.
    pub frames: Vec<Value>,
    /// The close frame, once received.
    pub closed: Option<(u16, String)>,
}

/// How to open a socket.
pub struct Connect<'a> {
    pub base_url: &'a str,
    pub session: &'a str,
    pub after: Option<u64>,
    pub bearer: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub origin: Option<&'a str>,
}

impl<'a> Connect<'a> {
    pub fn bearer(base_url: &'a str, session: &'a str, token: &'a str) -> Self {
        Self {
            base_url,
            session,
            after: None,
            bearer: Some(token),
            cookie: None,
            origin: None,
        }
    }

    pub fn after(mut self, after: u64) -> Self {
        self.after = Some(after);
        self
    }

    /// Opens it; `Err` carries the HTTP status of a refused upgrade.
    pub async fn try_open(self) -> Result<Socket, u16> {
        let ws_base = self.base_url.replacen("http://", "ws://", 1);
        let mut url = format!("{ws_base}/ws/sessions/{}", self.session);
        if let Some(after) = self.after {
            url.push_str(&format!("?after={after}"));
        }
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = self.bearer {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        if let Some(cookie) = self.cookie {
            request.headers_mut().insert(
                "cookie",
                format!("sashad_session={cookie}").parse().unwrap(),
            );
        }
        if let Some(origin) = self.origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((stream, _)) => Ok(Socket {
                stream,
                frames: Vec::new(),
                closed: None,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("websocket connect failed: {e}"),
        }
    }

    pub async fn open(self) -> Socket {
        self.try_open().await.expect("websocket upgrade refused")
    }
}

impl Socket {
    /// Sends a JSON message.
    pub async fn send(&mut self, value: Value) {
        self.stream
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }

    /// Sends a user message.
    pub async fn say(&mut self, text: &str) {
        self.send(serde_json::json!({"type": "user", "content": text}))
            .await;
    }

    /// The next frame (answering pings), `None` when the socket closed or the deadline passed.
    pub async fn next(&mut self, deadline: Duration) -> Option<Value> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let message = match tokio::time::timeout_at(until, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(m))) => m,
            };
            match message {
                Message::Text(text) => {
                    let value: Value =
                        serde_json::from_str(text.as_str()).expect("frames are JSON");
                    self.frames.push(value.clone());
                    return Some(value);
                }
                Message::Close(frame) => {
                    self.closed = Some(frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    }));
                    return None;
                }
                _ => {}
            }
        }
    }

    /// The next text frame as it came, unparsed and not added to `frames` (answering pings),
    /// for tests that read many megabytes and look closely at few frames. `None` when the
    /// socket closed (see `closed`) or the deadline passed.
    pub async fn next_text(&mut self, deadline: Duration) -> Option<String> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let message = match tokio::time::timeout_at(until, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(m))) => m,
            };
            match message {
                Message::Text(text) => return Some(text.as_str().to_owned()),
                Message::Close(frame) => {
                    self.closed = Some(frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    }));
                    return None;
                }
                _ => {}
            }
        }
    }

    /// Sends several JSON messages in one write, so the server reads them together (as a
    /// client typing fast, or a reconnecting one flushing its outbox, would send them).
    pub async fn send_batch(&mut self, values: &[Value]) {
        for value in values {
            self.stream
                .feed(Message::Text(value.to_string().into()))
                .await
                .unwrap();
        }
        self.stream.flush().await.unwrap();
    }

    /// Reads frames until one matches `pred` (returned), panicking with what arrived if the
    /// deadline passes or the socket closes first.
    pub async fn until(&mut self, deadline: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(frame) if pred(&frame) => return frame,
                Some(_) => {}
                None => panic!(
                    "no matching frame within {deadline:?} (closed: {:?}); got:\n{}",
                    self.closed,
                    summarize(&self.frames)
                ),
            }
        }
    }

    /// Reads until the end of the next turn (a `claude` `result` event), returning it.
    pub async fn until_result(&mut self) -> Value {
        self.until(FRAME_DEADLINE, is_result).await
    }

    /// Reads until the socket closes; returns the close code and reason.
    pub async fn until_closed(&mut self, deadline: Duration) -> (u16, String) {
        let until = tokio::time::Instant::now() + deadline;
        while self.closed.is_none() {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                panic!("socket still open after {deadline:?}");
            }
            if self.next(left).await.is_none() && self.closed.is_none() {
                return (1006, "closed without a close frame".into());
            }
        }
        self.closed.clone().unwrap()
    }

    /// The raw stream, for tests that must not read.
    pub fn close_code(code: CloseCode) -> u16 {
        u16::from(code)
    }
}

/// `{"type":"claude","event":{"type":"result",…}}`.
pub fn is_result(frame: &Value) -> bool {
    frame["type"] == "claude" && frame["event"]["type"] == "result"
}

/// The `event` of a `claude` frame, if it is one of `event_type`.
pub fn claude_event<'v>(frame: &'v Value, event_type: &str) -> Option<&'v Value> {
    (frame["type"] == "claude" && frame["event"]["type"] == event_type).then(|| &frame["event"])
}

/// Concatenated assistant text of `assistant` events among `frames`.
pub fn assistant_text(frames: &[Value]) -> String {
    frames
        .iter()
        .filter_map(|f| claude_event(f, "assistant"))
        .flat_map(|e| {
            e["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str().map(str::to_owned))
        .collect()
}

/// The `seq` of each frame that has one.
pub fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["seq"].as_u64()).collect()
}

/// One line per frame, long ones cut, for failure messages.
pub fn summarize(frames: &[Value]) -> String {
    frames
        .iter()
        .map(|f| {
            let s = f.to_string();
            if s.len() > 200 {
                format!(
                    "{}…",
                    &s[..s.char_indices().nth(200).map_or(s.len(), |(i, _)| i)]
                )
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Raw access, for protocol tests: frames the JSON helpers above cannot express (fragments,
/// binary, oversized) and control frames they skip (pings).
impl Socket {
    /// Sends any message as is, including `Message::Frame` (a raw frame, e.g. one fragment).
    pub async fn send_message(&mut self, message: Message) {
        self.stream.send(message).await.unwrap();
    }

    /// The next message of any kind, pings included (reading is also what sends the automatic
    /// pongs). Text frames are parsed into `frames` too, a close frame sets `closed`. `None`
    /// once the socket is closed or the deadline passed.
    pub async fn next_message(&mut self, deadline: Duration) -> Option<Message> {
        let message = match tokio::time::timeout(deadline, self.stream.next()).await {
            Err(_) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(m))) => m,
        };
        match &message {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("frames are JSON");
                self.frames.push(value);
            }
            Message::Close(frame) => {
                self.closed = Some(frame.as_ref().map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                }));
            }
            _ => {}
        }
        Some(message)
    }
}
