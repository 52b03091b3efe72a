//! Integration tests: one binary, so the suite compiles and links once.
//!
//! They talk to the real PostgreSQL (`DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/test)
//! and Redis (`REDIS_URL`, default redis://127.0.0.1:6379) and fail loudly when those are missing.

mod harness;

mod api;
mod cli;
mod controller;
mod drain;
mod drills;
mod e2e;
mod layout;
mod outcomes;
mod recognition;
mod registry;
mod replay;
mod reporter;
mod savings;
mod servers;
mod store;
mod stores_tls;
mod webhook;
