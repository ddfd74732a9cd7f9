//! The integration test binary: every test drives the real daemon, the real CLI or the mock
//! API over loopback.
mod common;

mod accounts;
mod api_key;
mod health;
mod keys;
mod log_hygiene;
mod mock_api_cli;
mod mock_api_http;
