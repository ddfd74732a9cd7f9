//! The stream-json protocol of the Claude Code CLI, in and out (DESIGN §5 and §6).
//!
//! A child runs as `claude -p --input-format stream-json --output-format stream-json --verbose
//! --include-partial-messages`. Every protocol fact below was measured on npm
//! `@anthropic-ai/claude-code` 2.1.332 and is recorded in `tests/fixtures/` (copies of
//! `fixtures/` beside DESIGN.md):
//! `claude-2.1.332-session.jsonl` (three turns, the last one interrupted) and
//! `claude-2.1.332-badkey.jsonl` (a 401 from the API). Facts that come from the Agent SDK's source
//! rather than a recording say so.
//!
//! **Out of the child (stdout):** one JSON value per line; [`classify`] reads each line once and
//! says what the session needs to know about it. The session forwards the line itself verbatim.
//! - `{"type":"system","subtype":"init","session_id":…}` opens **every turn** (not the process: a
//!   child prints nothing until its first user message), about 3 KB.
//! - `assistant`, `user` and (with `--include-partial-messages`) `stream_event` lines make up the
//!   turn; `system/status`, `rate_limit_event` and types newer than this code pass through.
//! - `{"type":"result","subtype":"success"|"error_during_execution"|…,"is_error":…}` ends a turn.
//!   In the recording its **first key is `duration_api_ms`, not `type`**, and `type` comes near the
//!   end, so nothing here may assume key order.
//! - `{"type":"control_response","response":{"subtype":"success","request_id":…,"response":…}}`
//!   answers a `control_request` the daemon wrote; `request_id` sits inside `response`.
//! - Bad credentials do not end the process: it prints `{"type":"system","subtype":"api_retry",
//!   "attempt":n,"error_status":401,"error":"authentication_failed",…}` and backs off for minutes.
//! - From the SDK's source: `{"type":"control_request","request_id":…,"request":{"subtype":
//!   "can_use_tool",…}}` asks the daemon something (with `--permission-prompt-tool stdio`), and
//!   `{"type":"control_cancel_request","request_id":…}` withdraws such a question.
//!
//! **Into the child (stdin):** [`user_message`] and [`interrupt_request`] build the two lines the
//! session writes. An interrupt without the `control_request` envelope is ignored by the CLI.
//!
//! Why a small struct and `IgnoredAny` instead of a `serde_json::Value` tree: the hot path parses
//! every stdout line once, and lines can be megabytes long. The struct below picks out the handful
//! of fields the session needs, borrows strings from the line where it can, and skips everything
//! else without allocating. Measured in a release build on the 2-core build machine
//! (`cargo bench --bench hot_path -- classify`, `classify` vs `serde_json::from_str::<Value>`):
//! the 2.9 KB `init` line 2.5 µs vs 17 µs, a 270-byte `stream_event` 0.38 µs vs 1.9 µs, a
//! `result` 2.1 µs vs 10 µs. On a 1 MiB line the scan that any parser must make dominates: both
//! take about 0.2 ms. The common small lines are five to seven times cheaper.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// What the session needs to know about one stdout line of the CLI.
///
/// Every variant except [`Classified::NotJson`] guarantees that the line is one complete, valid
/// JSON value in valid UTF-8, so it can be spliced verbatim into a WebSocket frame
/// (`{"seq":N,"type":"claude","event":<line>}`, DESIGN §5) without re-serializing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// Not JSON, or not UTF-8: forwarded as a `raw` event, never dropped (DESIGN §5).
    NotJson,
    /// `system/init`: a turn started. `session_id` is the CLI's conversation id, the one that
    /// `--resume=<id>` continues.
    Init {
        /// The Claude session id, a UUID in 2.1.332.
        session_id: String,
    },
    /// `result`: the turn ended.
    TurnEnded(TurnResult),
    /// `system/api_retry` caused by rejected credentials (`error_status` 401 or `error`
    /// `authentication_failed`). The CLI would retry for minutes; the session should tell the
    /// user at once (badkey fixture). Retries for other causes are [`Classified::Other`].
    AuthFailure {
        /// The HTTP status the API answered, 401 in the recording.
        error_status: Option<u16>,
        /// The CLI's error code, `authentication_failed` in the recording.
        error: Option<String>,
    },
    /// `control_response`: the CLI's answer to a `control_request` the daemon wrote, such as
    /// [`interrupt_request`].
    ControlResponse {
        /// The `request_id` of the request it answers (inside `response`).
        request_id: String,
        /// `response.subtype` was `success` (otherwise `error`).
        success: bool,
        /// `response.error`, when the request failed.
        error: Option<String>,
    },
    /// `control_request` from the CLI (for instance `can_use_tool` under
    /// `--permission-prompt-tool stdio`; from the SDK's source). The daemon must answer it.
    ControlRequest {
        /// The id the answer must carry.
        request_id: String,
        /// `request.subtype`, such as `can_use_tool`.
        subtype: String,
    },
    /// `control_cancel_request`: the CLI withdrew a pending `control_request` (SDK source).
    ControlCancelRequest {
        /// The id of the withdrawn request.
        request_id: String,
    },
    /// Any other JSON line (`assistant`, `user`, `stream_event`, `system/status`,
    /// `rate_limit_event`, types this code does not know, and known types missing a field the
    /// variants above need). Passed through untouched.
    Other {
        /// The `type` field, if the line is an object with a string `type`.
        kind: Option<String>,
        /// The `subtype` field, if it is a string.
        subtype: Option<String>,
    },
}

/// The facts of a `result` line that the session acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnResult {
    /// `success`, `error_during_execution` (after an interrupt), `error_max_turns`, …
    pub subtype: Option<String>,
    /// Whether the turn failed; `false` when the field is missing.
    pub is_error: bool,
    /// The Claude session id the turn belongs to.
    pub session_id: Option<String>,
    /// The HTTP status of a failed API call that ended the turn, if any (`api_error_status`).
    pub api_error_status: Option<u16>,
}

/// Classifies one stdout line (without its newline), parsing it once.
///
/// Never fails: a line that is not JSON is [`Classified::NotJson`], and a JSON line of an unknown
/// shape is [`Classified::Other`]. Nesting deeper than serde_json's recursion limit (128) counts
/// as not JSON.
pub fn classify(line: &[u8]) -> Classified {
    // serde_json does not check UTF-8 inside strings it skips, and the line will be spliced into
    // a text frame, so it must be checked; callers that have the text already use classify_str.
    match std::str::from_utf8(line) {
        Ok(text) => classify_str(text),
        Err(_) => Classified::NotJson,
    }
}

/// [`classify`] for a line already known to be UTF-8.
pub fn classify_str(text: &str) -> Classified {
    match serde_json::from_str::<MapOnly<Envelope<'_>>>(text) {
        Ok(MapOnly(Some(envelope))) => envelope.classify(),
        Ok(MapOnly(None)) => Classified::Other {
            kind: None,
            subtype: None,
        },
        // The envelope can refuse valid JSON (a duplicated key); tell that apart from garbage
        // only on this rare path.
        Err(_) => match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Classified::Other {
                kind: None,
                subtype: None,
            },
            Err(_) => Classified::NotJson,
        },
    }
}

/// The stdin line that sends a user message: `{"type":"user","message":{"role":"user",
/// "content":<content>}}` and a newline (DESIGN §6, `--input-format stream-json`; the `// stdin:`
/// lines of the session fixture).
///
/// `content` is a string or an array of content blocks (`{"type":"text","text":…}`,
/// `{"type":"image",…}`); the caller validates it.
pub fn user_message(content: &Value) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"type":"user","message":{"role":"user","content":"#;
    // `Value`'s `Display` is compact JSON and cannot fail, unlike `to_writer`'s signature.
    let content = content.to_string();
    let mut line = Vec::with_capacity(HEAD.len() + content.len() + 3);
    line.extend_from_slice(HEAD);
    line.extend_from_slice(content.as_bytes());
    line.extend_from_slice(b"}}\n");
    line
}

/// The stdin line that interrupts the running turn: `{"type":"control_request","request_id":<id>,
/// "request":{"subtype":"interrupt"}}` and a newline. The CLI answers with a
/// [`Classified::ControlResponse`] carrying the same id, then a `result` whose subtype is
/// `error_during_execution` (session fixture, third turn). Take ids from [`new_request_id`].
pub fn interrupt_request(request_id: &str) -> Vec<u8> {
    let line = serde_json::json!({
        "type": "control_request",
        "request_id": request_id,
        "request": { "subtype": "interrupt" },
    });
    let mut line = line.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// A fresh `request_id` for a `control_request`: `req_<n>_<8 hex digits>`, the shape the Agent
/// SDK uses and the fixture shows (`req_1_abcd1234`). `n` counts up across the whole daemon and
/// the suffix is random, so ids never repeat within a process, nor across restarts in practice.
pub fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("req_{n}_{:08x}", rand::random::<u32>())
}

/// The fields of a stdout line that [`classify`] looks at; serde skips the rest.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Scalar<'a>,
    #[serde(borrow)]
    subtype: Scalar<'a>,
    #[serde(borrow)]
    session_id: Scalar<'a>,
    #[serde(borrow)]
    request_id: Scalar<'a>,
    #[serde(borrow)]
    is_error: Scalar<'a>,
    #[serde(borrow)]
    error_status: Scalar<'a>,
    #[serde(borrow)]
    api_error_status: Scalar<'a>,
    #[serde(borrow)]
    error: Scalar<'a>,
    #[serde(borrow)]
    request: MapOnly<Inner<'a>>,
    #[serde(borrow)]
    response: MapOnly<Inner<'a>>,
}

/// The fields of a `control_request`'s `request` or a `control_response`'s `response`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Inner<'a> {
    #[serde(borrow)]
    subtype: Scalar<'a>,
    #[serde(borrow)]
    request_id: Scalar<'a>,
    #[serde(borrow)]
    error: Scalar<'a>,
}

impl Envelope<'_> {
    fn classify(self) -> Classified {
        let kind = self.kind.str();
        let subtype = self.subtype.str();
        let known = match (kind, subtype) {
            (Some("system"), Some("init")) => self
                .session_id
                .string()
                .map(|session_id| Classified::Init { session_id }),
            (Some("system"), Some("api_retry"))
                if self.error_status.u16() == Some(401)
                    || self.error.str() == Some("authentication_failed") =>
            {
                Some(Classified::AuthFailure {
                    error_status: self.error_status.u16(),
                    error: self.error.string(),
                })
            }
            (Some("result"), _) => Some(Classified::TurnEnded(TurnResult {
                subtype: self.subtype.string(),
                is_error: self.is_error.bool().unwrap_or(false),
                session_id: self.session_id.string(),
                api_error_status: self.api_error_status.u16(),
            })),
            (Some("control_response"), _) => self.response.0.as_ref().and_then(|response| {
                Some(Classified::ControlResponse {
                    request_id: response.request_id.string()?,
                    success: response.subtype.str() == Some("success"),
                    error: response.error.string(),
                })
            }),
            (Some("control_request"), _) => {
                let subtype = self.request.0.as_ref().and_then(|r| r.subtype.string());
                self.request_id
                    .string()
                    .zip(subtype)
                    .map(|(request_id, subtype)| Classified::ControlRequest {
                        request_id,
                        subtype,
                    })
            }
            (Some("control_cancel_request"), _) => self
                .request_id
                .string()
                .map(|request_id| Classified::ControlCancelRequest { request_id }),
            _ => None,
        };
        known.unwrap_or_else(|| Classified::Other {
            kind: self.kind.string(),
            subtype: self.subtype.string(),
        })
    }
}

/// A JSON scalar, read leniently: a field of an unexpected type (an object where a string was
/// expected) becomes `Other` instead of failing the whole line, because the same key can mean
/// different things in different line types.
#[derive(Default)]
enum Scalar<'a> {
    #[default]
    Absent,
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Other,
}

impl Scalar<'_> {
    fn str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    fn string(&self) -> Option<String> {
        self.str().map(str::to_owned)
    }

    fn bool(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn u16(&self) -> Option<u16> {
        match self {
            Scalar::Int(n) => u16::try_from(*n).ok(),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
            type Value = Scalar<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Scalar::Other, Scalar::Int))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }

        deserializer.deserialize_any(ScalarVisitor(PhantomData))
    }
}

/// `Some(T)` when the value is a JSON object, `None` for any other value (skipped). This also
/// stops a derived struct from accepting a JSON array positionally.
struct MapOnly<T>(Option<T>);

impl<T> Default for MapOnly<T> {
    fn default() -> Self {
        MapOnly(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapOnlyVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapOnlyVisitor<T> {
            type Value = MapOnly<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|t| MapOnly(Some(t)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MapOnly(None))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MapOnly(None))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MapOnly(None))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MapOnly(None))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MapOnly(None))
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MapOnly(None))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MapOnly(None))
            }
        }

        deserializer.deserialize_any(MapOnlyVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SESSION: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/claude-2.1.332-session.jsonl"
    ));
    const BADKEY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/claude-2.1.332-badkey.jsonl"
    ));

    const SESSION_ID: &str = "f9afb955-568c-48f2-a987-6b6d9303fbcf";

    /// The stdout lines of a fixture: `//` lines are annotations or stdin, not output.
    fn stdout_lines(fixture: &str) -> impl Iterator<Item = &str> {
        fixture
            .lines()
            .filter(|l| !l.starts_with("//") && !l.is_empty())
    }

    /// A one-line summary, so a whole fixture's classification reads as a list.
    fn label(c: &Classified) -> String {
        match c {
            Classified::NotJson => "raw".into(),
            Classified::Init { session_id } => format!("init {session_id}"),
            Classified::TurnEnded(r) => format!(
                "result {} is_error={} {}",
                r.subtype.as_deref().unwrap_or("-"),
                r.is_error,
                r.session_id.as_deref().unwrap_or("-")
            ),
            Classified::AuthFailure {
                error_status,
                error,
            } => format!("auth_failure {error_status:?} {error:?}"),
            Classified::ControlResponse {
                request_id,
                success,
                error,
            } => format!("control_response {request_id} success={success} {error:?}"),
            Classified::ControlRequest {
                request_id,
                subtype,
            } => format!("control_request {request_id} {subtype}"),
            Classified::ControlCancelRequest { request_id } => {
                format!("control_cancel_request {request_id}")
            }
            Classified::Other { kind, subtype } => format!(
                "{}{}",
                kind.as_deref().unwrap_or("?"),
                subtype
                    .as_deref()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            ),
        }
    }

    fn labels(fixture: &str) -> Vec<String> {
        stdout_lines(fixture)
            .map(|l| label(&classify(l.as_bytes())))
            .collect()
    }

    #[test]
    fn golden_session_fixture() {
        let init = format!("init {SESSION_ID}");
        let ok = format!("result success is_error=false {SESSION_ID}");
        let interrupted = format!("result error_during_execution is_error=true {SESSION_ID}");
        let ev = "stream_event";
        let expected: Vec<&str> = vec![
            // Turn 1: a plain answer.
            &init,
            "system/status",
            ev,
            ev,
            ev,
            ev,
            ev,
            ev,
            "assistant",
            ev,
            ev,
            ev,
            &ok,
            // Turn 2: a Bash tool call and its result, then the answer.
            &init,
            "system/status",
            ev,
            ev,
            ev,
            "assistant",
            ev,
            ev,
            ev,
            "user",
            "system/status",
            ev,
            ev,
            ev,
            "assistant",
            ev,
            ev,
            ev,
            &ok,
            // Turn 3: interrupted by `req_1_abcd1234`.
            &init,
            "system/status",
            ev,
            ev,
            ev,
            ev,
            ev,
            ev,
            "control_response req_1_abcd1234 success=true None",
            "assistant",
            "user",
            ev,
            ev,
            ev,
            &interrupted,
        ];
        assert_eq!(labels(SESSION), expected);
    }

    #[test]
    fn golden_badkey_fixture() {
        let auth = "auth_failure Some(401) Some(\"authentication_failed\")";
        assert_eq!(
            labels(BADKEY),
            vec![
                "init ade6cb5d-15d0-400e-8ca6-f1437316ddee",
                auth,
                auth,
                auth,
                auth
            ]
        );
    }

    #[test]
    fn result_line_does_not_start_with_type() {
        let result = stdout_lines(SESSION)
            .find(|l| l.contains(r#""type":"result""#))
            .unwrap();
        assert!(result.starts_with(r#"{"duration_api_ms""#));
        assert!(matches!(
            classify(result.as_bytes()),
            Classified::TurnEnded(_)
        ));
    }

    #[test]
    fn fixture_stdin_lines_match_the_builders() {
        let stdin: Vec<Value> = SESSION
            .lines()
            .filter_map(|l| l.strip_prefix("// stdin: "))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(stdin.len(), 4);
        for recorded in &stdin[..3] {
            let built = user_message(&recorded["message"]["content"]);
            assert!(built.ends_with(b"}\n") && !built[..built.len() - 1].contains(&b'\n'));
            assert_eq!(&serde_json::from_slice::<Value>(&built).unwrap(), recorded);
        }
        let built = interrupt_request("req_1_abcd1234");
        assert!(built.ends_with(b"}\n"));
        assert_eq!(serde_json::from_slice::<Value>(&built).unwrap(), stdin[3]);
    }

    #[test]
    fn user_message_with_content_blocks_is_one_line() {
        let content = json!([
            {"type": "text", "text": "line one\nline two \u{2028} é"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        ]);
        let built = user_message(&content);
        assert_eq!(built.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            serde_json::from_slice::<Value>(&built).unwrap(),
            json!({"type": "user", "message": {"role": "user", "content": content}})
        );
    }

    #[test]
    fn request_ids_are_unique_and_shaped_like_the_sdk() {
        let ids: Vec<String> = (0..1000).map(|_| new_request_id()).collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for id in &ids {
            let mut parts = id.split('_');
            assert_eq!(parts.next(), Some("req"));
            assert!(parts.next().unwrap().parse::<u64>().is_ok());
            let hex = parts.next().unwrap();
            assert_eq!(hex.len(), 8);
            assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
            assert_eq!(parts.next(), None);
        }
    }

    #[test]
    fn not_json_lines_are_raw() {
        for line in [
            &b"Error: something went wrong"[..],
            b"{\"type\":\"user\"",
            b"{\"type\":\"user\"} trailing",
            b"\xff\xfe",
            // Valid JSON except for invalid UTF-8 inside a string that the envelope skips.
            b"{\"type\":\"assistant\",\"text\":\"\xc3\x28\"}",
        ] {
            assert_eq!(classify(line), Classified::NotJson, "{line:?}");
        }
    }

    #[test]
    fn json_that_is_not_an_event_passes_through() {
        let none = Classified::Other {
            kind: None,
            subtype: None,
        };
        for line in [
            "42",
            "\"text\"",
            "null",
            "[\"result\",\"success\"]",
            "{}",
            "{\"type\":7}",
        ] {
            assert_eq!(classify(line.as_bytes()), none, "{line}");
        }
        // A duplicated key makes the envelope fail, but the line is still valid JSON.
        assert_eq!(classify(br#"{"type":"result","type":"result"}"#), none);
        assert_eq!(
            classify(br#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}"#),
            Classified::Other {
                kind: Some("rate_limit_event".into()),
                subtype: None
            }
        );
        assert_eq!(
            classify(br#"{"subtype":"brand_new","type":"system"}"#),
            Classified::Other {
                kind: Some("system".into()),
                subtype: Some("brand_new".into())
            }
        );
    }

    #[test]
    fn fields_of_unexpected_types_do_not_break_classification() {
        // `error` as an object and `session_id` as a number, as some other line type might.
        let line = br#"{"type":"assistant","error":{"x":1},"session_id":5,"request":[1]}"#;
        assert_eq!(
            classify(line),
            Classified::Other {
                kind: Some("assistant".into()),
                subtype: None
            }
        );
        // An init without a string session id cannot be acted on, so it only passes through.
        assert_eq!(
            classify(br#"{"type":"system","subtype":"init","session_id":null}"#),
            Classified::Other {
                kind: Some("system".into()),
                subtype: Some("init".into())
            }
        );
    }

    #[test]
    fn escaped_strings_are_decoded() {
        assert_eq!(
            classify(br#"{"type":"system","subtype":"init","session_id":"a\u0062c\"d"}"#),
            Classified::Init {
                session_id: "abc\"d".into()
            }
        );
    }

    #[test]
    fn api_retry_for_other_causes_is_not_an_auth_failure() {
        let overloaded = br#"{"type":"system","subtype":"api_retry","attempt":1,"error_status":529,"error":"overloaded"}"#;
        assert_eq!(
            classify(overloaded),
            Classified::Other {
                kind: Some("system".into()),
                subtype: Some("api_retry".into())
            }
        );
        let no_status = br#"{"type":"system","subtype":"api_retry","error_status":null,"error":"authentication_failed"}"#;
        assert_eq!(
            classify(no_status),
            Classified::AuthFailure {
                error_status: None,
                error: Some("authentication_failed".into())
            }
        );
        let status_only = br#"{"type":"system","subtype":"api_retry","error_status":401}"#;
        assert_eq!(
            classify(status_only),
            Classified::AuthFailure {
                error_status: Some(401),
                error: None
            }
        );
    }

    #[test]
    fn control_lines() {
        assert_eq!(
            classify(
                br#"{"type":"control_response","response":{"subtype":"error","request_id":"req_9_00000000","error":"no turn running"}}"#
            ),
            Classified::ControlResponse {
                request_id: "req_9_00000000".into(),
                success: false,
                error: Some("no turn running".into())
            }
        );
        assert_eq!(
            classify(
                br#"{"type":"control_request","request_id":"abc","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"}}}"#
            ),
            Classified::ControlRequest {
                request_id: "abc".into(),
                subtype: "can_use_tool".into()
            }
        );
        assert_eq!(
            classify(br#"{"type":"control_cancel_request","request_id":"abc"}"#),
            Classified::ControlCancelRequest {
                request_id: "abc".into()
            }
        );
        // A control_response without an id cannot be matched to a request.
        assert_eq!(
            classify(br#"{"type":"control_response","response":{"subtype":"success"}}"#),
            Classified::Other {
                kind: Some("control_response".into()),
                subtype: None
            }
        );
    }

    #[test]
    fn result_fields() {
        assert_eq!(
            classify(br#"{"is_error":true,"api_error_status":401,"type":"result","subtype":"error_during_execution"}"#),
            Classified::TurnEnded(TurnResult {
                subtype: Some("error_during_execution".into()),
                is_error: true,
                session_id: None,
                api_error_status: Some(401),
            })
        );
    }

    #[test]
    fn multi_megabyte_line() {
        let text = "é".repeat(3 * 1024 * 1024);
        let line = json!({"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}, "session_id": "s"});
        assert_eq!(
            classify(line.to_string().as_bytes()),
            Classified::Other {
                kind: Some("assistant".into()),
                subtype: None
            }
        );
    }
}
