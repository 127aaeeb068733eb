//! vpcrouter: keeps AWS VPC route tables pointing at healthy EC2 router instances.
//!
//! This crate is the program: `main`, the command line and the assembly of the parts, each
//! a crate of its own (see the README's "Architecture"):
//! * [`cli`]: parses the command line, including options declared by the loaded plugins;
//! * [`run`]: start-up and shut-down: builds the parts from the options and runs the engine;
//! * [`client`]: the `drain`, `undrain` and `drains` subcommands (a request to the daemon);
//! * [`plan`]: the `plan` subcommand (what a daemon would change with a spec; reads only);
//! * [`logging`]: log setup;
//! * [`notifiers`]: the notifiers of a run (`--notify`: plugins and the built-in `sns`).
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod logging;
pub mod notifiers;
pub mod plan;
pub mod run;

/// This program's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
