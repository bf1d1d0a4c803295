#![warn(missing_docs)]
//! The fleet's desired routing in a store (etcd), so that every instance, including one an
//! autoscaler starts mid-deploy, serves the fleet's colour.
//!
//! # Layout
//! - [`desired`]: the records (the desired state, a prepared change, a member's report), the
//!   changes an operator makes, and how a member applies a desired state through `Control`.
//! - [`store`]: the [`FleetStore`] trait: what a member and a coordinator need of a store.
//! - [`etcd`]: [`EtcdStore`], the trait on etcd's v3 API.
//! - [`member`]: the task that joins the fleet and keeps this instance on its desired state,
//!   holding the health path while it has not joined or knows it is behind.
//! - [`coordinator`]: one change for the whole fleet: lock, prepare, acknowledgements, commit.
//!
//! This crate sees `turnout-core` (the `Control` a member changes the routing through, and the
//! `FleetView` the health path reads) and nothing of the data plane or the admin API.

pub mod coordinator;
pub mod desired;
mod error;
pub mod etcd;
pub mod member;
pub mod store;

pub use desired::{Change, Desired, MemberRecord, Prepare};
pub use error::FleetError;
pub use etcd::{EtcdOptions, EtcdStore, EtcdTls};
pub use store::{FleetRead, FleetStore};
