//! Caching and sharing of work: [`key`] composes every cache and flight
//! key; [`flight`] lets concurrent requests for the same work share one
//! execution.
//!
//! The response caches (moka and Redis) join this module in a later
//! milestone.

pub mod flight;
pub mod key;
