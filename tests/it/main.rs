//! The integration test binary: every test drives the real daemon, the real CLI or the fake
//! one over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod accounts;
mod api_key;
mod assets;
mod container;
mod fake_cli;
mod health;
mod isolation;
mod keys;
mod log_hygiene;
mod mock_api_cli;
mod mock_api_http;
mod oauth;
mod operations;
mod providers;
mod sessions_cli;
mod sessions_fake;
mod sessions_http;
