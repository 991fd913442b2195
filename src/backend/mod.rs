//! Everything the gateway says to the backend on its own behalf, and how it connects: the pooled
//! client ([`Upstream`], also used by the proxy for client requests), every rustls
//! configuration (`tls`), revoking a backend session with its tokens (`revoke`), role lookups
//! (`roles`) and reading the backend's JSON fields and cookies (`fields`).

pub mod client;
pub mod fields;
pub mod revoke;
pub mod roles;
pub mod tls;

pub use client::{Call, Upstream};
