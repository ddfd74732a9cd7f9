//! sashad: runs Claude Code for a web app's users.
//!
//! The library holds the whole daemon; `main.rs` only parses the command line and calls in here.
//! Tests and benches build the same app on a port-0 listener.

pub mod claude;
