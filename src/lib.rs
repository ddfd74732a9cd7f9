//! sashad: runs Claude Code for a web app's users.
//!
//! The library holds the whole daemon; `main.rs` only parses the command line and calls in here.
//! [`daemon::prepare`] opens the store and checks the keys, and [`daemon::run`] serves on a
//! listener the caller bound, so tests and benches drive the real app on port 0.

pub mod accounts;
pub mod anthropic;
pub mod claude;
pub mod config;
pub mod credential;
pub mod crypto;
pub mod daemon;
pub mod error;
pub mod http;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod ownership;
pub mod sandbox;
pub mod signin;
pub mod store;
pub mod supervisor;
pub mod workspace;
