//! The integration test binary: every test drives the real daemon over loopback.
mod common;
mod mock_api_cli;
mod mock_api_http;
