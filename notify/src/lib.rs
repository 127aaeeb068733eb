//! vpcrouter's notifications (`--notify`): what the daemon tells the world when routes move.
//!
//! Each [`Event`] is rendered once to its JSON object ([`Rendered`]) and handed to every
//! notifier ([`Sink`]) through a bounded queue of its own: when a queue is full, its oldest
//! event is dropped (and counted), so a slow or hung notifier never blocks the engine and
//! never holds back the others. One thread per notifier delivers its events in order.
//! Stopping never delays shutdown: it is bounded by a deadline, and what was not delivered
//! by then is counted and logged as dropped.
//!
//! Layout:
//! * [`event`]: the events ([`Event`], from the engine's
//!   [`Announcement`](vpcrouter_engine::Announcement) or the drains) and their JSON
//!   ([`Rendered`]);
//! * [`sink`]: a notifier as the hub sees it ([`Sink`]);
//! * [`queue`]: one notifier's bounded queue, counters ([`NotifierStatus`]) and delivery
//!   thread;
//! * [`hub`]: the fan-out to every notifier ([`Notifiers`]), the engine's
//!   [`Announcer`](vpcrouter_engine::Announcer), cluster mode's "only the leader speaks",
//!   and the bounded stop.
#![forbid(unsafe_code)]

pub mod event;
pub mod hub;
pub mod queue;
pub mod sink;

pub use event::{Event, Rendered};
pub use hub::Notifiers;
pub use queue::NotifierStatus;
pub use sink::Sink;

/// Events a notifier's queue holds before the oldest is dropped.
pub const DEFAULT_QUEUE: usize = 1000;
