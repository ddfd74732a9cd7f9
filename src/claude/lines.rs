//! Line framing of a child stdout (placeholder).
