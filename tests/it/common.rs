//! Support code shared by the integration tests.
#![allow(dead_code)]

pub mod mock_api;
