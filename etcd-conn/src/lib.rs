//! The etcd connection shared by the host's cluster mode and the `etcd` watcher plugin:
//! the one endpoint parser ([`parse_endpoints`]), the `--etcd-*` option set for TLS and
//! authentication ([`OPTIONS`], [`EtcdSecurity`]), the etcd client's connect options, and
//! the one describer of etcd errors ([`describe`]).
//!
//! Third-party plugins need none of this: they depend on `vpcrouter-plugin-api` only.

#![deny(unsafe_code)]

mod describe;
mod endpoint;
mod options;

pub use describe::{describe, Access, Call};
pub use endpoint::{parse_endpoints, Endpoint, EndpointError, Scheme, DEFAULT_PORT};
pub use options::{
    arg_specs, is_shared, EtcdConfigError, EtcdConn, EtcdSecurity, Password, Secret, SharedOption, CACERT, CERT,
    HEADING, KEY, OPTIONS, PASSWORD_ENV, PASSWORD_FILE, USER,
};
