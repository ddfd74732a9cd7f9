//! The integration test binary: every test drives the real daemon over loopback.
mod common;
mod fake_cli;
