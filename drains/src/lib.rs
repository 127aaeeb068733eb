//! Drains (maintenance mode): routers an operator takes out of service before patching
//! them (`vpcrouter drain IP`, `POST /drain/IP`).
//!
//! A drained router is no candidate: the planner moves its routes to another healthy
//! candidate (reason `drained`) and routes nothing to it until it is undrained; when no
//! other candidate is healthy the route stays, with a warning. Undraining moves nothing
//! back by itself (vpc-router never fails back): the router is a candidate again.
//!
//! Where drains live:
//! * alone: in `drains.json` of `--state-dir` (default `/var/lib/vpcrouter`), written
//!   atomically (temporary file, fsync, rename, fsync of the directory) before a request is
//!   answered, so that drains survive a restart. A drain that cannot be stored is refused
//!   (the request fails) rather than kept in memory only; a corrupt file stops the start.
//! * in cluster mode: in etcd, `/vpcrouter/<cluster>/drains/<ip>` (no lease), so that every
//!   leader honours them; any instance takes requests, and every instance learns of them
//!   through its watch of the cluster's keys. The state file is not used then: etcd is the
//!   one truth, and a file per instance could only disagree with it.
//!
//! [`Drains`] is the handle the status server and the start-up share; the engine hears of
//! each change through the callback it was made with.
//!
//! Layout:
//! * `drain`: one drain ([`Drain`]), the set in force ([`DrainSet`]), the reason's rules;
//! * `state_file`: `drains.json`: reading it, writing it atomically, its limits, and why
//!   that fails ([`DrainError`], also the cluster's refusal);
//! * `registry`: the drains in force ([`Drains`]) and the port to the cluster's store
//!   ([`SharedStore`]).

#![forbid(unsafe_code)]

mod drain;
mod registry;
mod state_file;

pub use drain::{check_reason, Drain, DrainSet, MAX_REASON};
pub use registry::{Changed, Drains, SharedStore, StoreFuture};
pub use state_file::{load, save, DrainError, MAX_STATE_FILE, STATE_FILE};
