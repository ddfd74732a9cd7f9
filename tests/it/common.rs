//! Support code shared by the integration tests.
#![allow(dead_code)]

pub mod client;
pub mod daemon;
pub mod fake_cli;
pub mod mock_api;
pub mod ws;
