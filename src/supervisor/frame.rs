//! Server→client frames of the WebSocket protocol (DESIGN §5), each built once per event and
//! shared by the replay ring and every socket.
//!
//! A CLI line is spliced in verbatim (`{"seq":N,"type":"claude","event":<line>}`): the parser
//! already proved it is one valid JSON value in UTF-8, so it is never re-serialized.

use bytestring::ByteString;
use serde_json::{json, Value};

use super::SessionState;

/// `{"seq":N,"type":"claude","event":<line>}`. `line` must be one JSON value.
pub fn claude(seq: u64, line: &str) -> ByteString {
    use std::fmt::Write;
    let mut frame = String::with_capacity(line.len() + 60);
    // Writing into a String cannot fail.
    let _ = write!(
        frame,
        "{{\"seq\":{seq},\"type\":\"claude\",\"event\":{line}}}"
    );
    ByteString::from(frame)
}

/// `{"seq":N,"type":"user","content":…}`.
pub fn user(seq: u64, content: &Value) -> ByteString {
    ByteString::from(json!({"seq": seq, "type": "user", "content": content}).to_string())
}

/// `{"seq":N,"type":"state","state":…}` plus optional details (exit code, signal, stderr tail).
pub fn state(seq: u64, state: SessionState, details: Option<&Value>) -> ByteString {
    let mut value = json!({"seq": seq, "type": "state", "state": state.as_str()});
    if let (Some(Value::Object(extra)), Value::Object(map)) = (details, &mut value) {
        map.extend(extra.clone());
    }
    ByteString::from(value.to_string())
}

/// `{"seq":N,"type":"error","error":code,"message":…}`.
pub fn error(seq: u64, code: &str, message: &str) -> ByteString {
    ByteString::from(
        json!({"seq": seq, "type": "error", "error": code, "message": message}).to_string(),
    )
}

/// `{"seq":N,"type":"raw","line":…}`: a stdout line that is not JSON, as lossy UTF-8.
pub fn raw(seq: u64, line: &[u8]) -> ByteString {
    ByteString::from(
        json!({"seq": seq, "type": "raw", "line": String::from_utf8_lossy(line)}).to_string(),
    )
}

/// `{"type":"gap","from":A,"to":B}`: events a client asked for that left the replay ring.
pub fn gap(from: u64, to: u64) -> ByteString {
    ByteString::from(json!({"type": "gap", "from": from, "to": to}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_json_with_the_contract_fields() {
        let f: Value = serde_json::from_str(&claude(7, r#"{"type":"result","x":[1,2]}"#)).unwrap();
        assert_eq!(
            f,
            json!({"seq": 7, "type": "claude", "event": {"type": "result", "x": [1, 2]}})
        );
        let f: Value =
            serde_json::from_str(&state(3, SessionState::Exited, Some(&json!({"code": 3}))))
                .unwrap();
        assert_eq!(
            f,
            json!({"seq": 3, "type": "state", "state": "exited", "code": 3})
        );
        let f: Value = serde_json::from_str(&raw(4, b"not json \xff")).unwrap();
        assert_eq!(f["line"], "not json \u{FFFD}");
        let f: Value = serde_json::from_str(&gap(1, 9)).unwrap();
        assert_eq!(f, json!({"type": "gap", "from": 1, "to": 9}));
    }
}
