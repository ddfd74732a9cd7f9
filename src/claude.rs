//! The boundary with the Claude Code CLI: how a child's stdout is framed into lines and what
//! those lines mean (stream-json, DESIGN §6).

pub mod command;
pub mod lines;
pub mod protocol;
