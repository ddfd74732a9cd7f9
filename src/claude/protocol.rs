//! stream-json protocol (placeholder).
