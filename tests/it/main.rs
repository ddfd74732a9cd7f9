//! The integration test binary: every test drives the real daemon over loopback.
mod common;

mod accounts;
mod api_key;
mod health;
mod keys;
mod log_hygiene;
