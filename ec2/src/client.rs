//! The EC2 client, [`Ec2`]: one region's SDK client and what every call shares (counters,
//! the observer of call durations, the read caches, the role the calls are made as).
//!
//! Only translation between EC2 and the model, and error classification, happen in this
//! crate's client; every decision is the planner's. Each method makes single attempts:
//! retries, the token buckets and the cap on calls in flight are the executor's
//! ([`crate::executor`]); the SDK's own retries are off. Timeouts are the SDK's, configured
//! in [`Ec2::connect`]. The reads are in `read.rs`, the writes in `write.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use vpcrouter_engine::Observer;
use vpcrouter_planner::model::Cidr;

use crate::error::{assume_role_failure, Ec2Error};
use crate::operations::{Op, OPS};
use crate::role::RoleConfig;

pub use vpcrouter_engine::budget::CallCount;

/// Calls, errors and throttled answers per operation (indexed like [`Op::ALL`]), for
/// `/status` and the `vpcrouter_ec2_*_total` metrics.
#[derive(Debug, Default)]
struct Counters {
    /// Calls sent, answered or not.
    calls: [AtomicU64; OPS],
    /// Calls that failed, for whatever reason.
    errors: [AtomicU64; OPS],
    /// Calls EC2 answered with a throttling code: how often the account's bucket ran dry.
    throttled: [AtomicU64; OPS],
}

/// Entries of prefix lists by (id, version).
type ListEntries = BTreeMap<(String, i64), Vec<Cidr>>;

/// A VPC that DescribeVpcs confirmed to exist, with its CIDR blocks.
pub(crate) type ConfirmedVpc = Option<(String, Vec<Cidr>)>;

/// The observer of call durations, shown by name only in `Debug`.
#[derive(Clone)]
struct CallObserver(Arc<dyn Observer>);

impl std::fmt::Debug for CallObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// A client for one region; cheap to clone (clones share the connection pool and counters).
#[derive(Clone, Debug)]
pub struct Ec2 {
    /// The SDK's client: signs and sends every call (its connection pool is shared by clones).
    pub(crate) client: aws_sdk_ec2::Client,
    /// The region the client calls, named in logs and in errors (VPC not found, transport).
    pub(crate) region: String,
    /// Calls, errors and throttled answers, shared by clones so that `/status` sees them all.
    counters: Arc<Counters>,
    /// Hears each call's duration (the daemon's metrics).
    observer: CallObserver,
    /// The VPC DescribeVpcs last confirmed, with the CIDR blocks it reported; later reads
    /// skip that call (a CIDR block associated later shows as a table's `local` route).
    pub(crate) confirmed_vpc: Arc<Mutex<ConfirmedVpc>>,
    /// The cluster name whose prefix lists are read (`None`: none are).
    pub(crate) owner: Option<String>,
    /// `--prefix-lists`: the lists are read with every state.
    pub(crate) list_mode: bool,
    /// Whether the last read found lists this cluster owns (true before the first read).
    /// Without list mode, the lists are read only then, or when a route table has a route
    /// to a prefix list: 3 reads per steady reconcile instead of 4.
    pub(crate) lists_seen: Arc<AtomicBool>,
    /// Entries of owned prefix lists by (id, version): read once per version.
    pub(crate) entries: Arc<Mutex<ListEntries>>,
    /// The ARN of the role whose credentials the calls are made with (`--role-arn`).
    role: Option<Arc<str>>,
}

/// The SDK configuration loader: standard chain, `region`, no retries (the executor's),
/// timeouts. Clients of other services ([`crate::sns`]) start from it too, and set their
/// own retries and timeouts on their client's configuration.
pub(crate) fn loader(region: &str) -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
}

/// The configuration every AWS client of vpcrouter is built from: `loader`'s (the standard
/// chain: environment with `AWS_ENDPOINT_URL`, profile, instance role), with the calls made
/// as `role` when given (`--role-arn`: the chain's credentials then only sign STS's
/// AssumeRole, see [`crate::role`]).
pub(crate) async fn sdk_config(loader: aws_config::ConfigLoader, role: Option<&RoleConfig>) -> aws_config::SdkConfig {
    let conf = loader.load().await;
    match role {
        Some(role) => {
            let assumed = role.provider(&conf).await;
            conf.into_builder().credentials_provider(assumed).build()
        }
        None => conf,
    }
}

impl Ec2 {
    /// Builds a client from the standard SDK chain (env, profile, `AWS_ENDPOINT_URL`), with `region`.
    /// Call durations go to `observer`.
    pub async fn connect(region: &str, observer: Arc<dyn Observer>) -> Ec2 {
        Ec2::from_loader(region, loader(region), None, observer).await
    }

    /// [`Ec2::connect`], with the calls made as `role`: the standard chain's credentials
    /// only sign STS's AssumeRole (in `region`), and the assumed credentials are cached
    /// and renewed before they expire by the client's identity cache (see
    /// [`crate::role`]). Nothing is called yet: a role that cannot be assumed shows as
    /// [`Ec2Error::AssumeRole`] on the first call.
    pub async fn connect_as(region: &str, role: Option<&RoleConfig>, observer: Arc<dyn Observer>) -> Ec2 {
        Ec2::from_loader(region, loader(region), role, observer).await
    }

    /// A client from `loader`'s configuration, its calls made as `role` when given (tests
    /// pass a loader pointed at their own endpoint).
    async fn from_loader(
        region: &str,
        loader: aws_config::ConfigLoader,
        role: Option<&RoleConfig>,
        observer: Arc<dyn Observer>,
    ) -> Ec2 {
        let conf = sdk_config(loader, role).await;
        Ec2 {
            client: aws_sdk_ec2::Client::new(&conf),
            region: region.to_owned(),
            counters: Arc::new(Counters::default()),
            observer: CallObserver(observer),
            confirmed_vpc: Arc::default(),
            owner: None,
            list_mode: false,
            lists_seen: Arc::new(AtomicBool::new(true)),
            entries: Arc::default(),
            role: role.map(|r| Arc::from(r.arn.as_str())),
        }
    }

    /// Reads (and may change) the prefix lists tagged with this cluster name.
    pub fn owning_lists_of(mut self, cluster: &str) -> Ec2 {
        self.owner = Some(cluster.to_owned());
        self
    }

    /// `--prefix-lists`: read the lists with every state. Without it they are read only
    /// while this cluster owns some (to retire them) or a table routes to a prefix list
    /// (its weight in the table's quota).
    pub fn routing_through_lists(mut self, on: bool) -> Ec2 {
        self.list_mode = on;
        self
    }

    /// Counts one call of `op` sent at `sent`, records its duration, and classifies its
    /// error, if any.
    pub(crate) fn record<T, E>(&self, op: Op, sent: Instant, result: Result<T, SdkError<E>>) -> Result<T, Ec2Error>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let i = op as usize;
        self.counters.calls[i].fetch_add(1, Ordering::Relaxed);
        self.observer.0.call_seconds(op.name(), sent.elapsed().as_secs_f64());
        result.map_err(|err| {
            self.counters.errors[i].fetch_add(1, Ordering::Relaxed);
            let assume_failed = self.role.as_ref().and_then(|role| Some((role, assume_role_failure(&err)?)));
            let err = match assume_failed {
                Some((role, (reason, transient))) => {
                    Ec2Error::AssumeRole { operation: op.name(), role: role.to_string(), reason, transient }
                }
                None => Ec2Error::classify(op, &self.region, err),
            };
            if err.is_throttle() {
                self.counters.throttled[i].fetch_add(1, Ordering::Relaxed);
            }
            err
        })
    }

    /// Counters for every operation the adapter uses.
    pub fn call_counts(&self) -> Vec<CallCount> {
        Op::ALL
            .iter()
            .map(|&op| {
                let i = op as usize;
                let get = |a: &[AtomicU64; OPS]| a[i].load(Ordering::Relaxed);
                CallCount {
                    operation: op.name(),
                    calls: get(&self.counters.calls),
                    errors: get(&self.counters.errors),
                    throttled: get(&self.counters.throttled),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use aws_sdk_ec2::config::Credentials;
    use std::net::TcpListener;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
    }

    fn counts(ec2: &Ec2, op: &str) -> (u64, u64) {
        ec2.call_counts().into_iter().find(|c| c.operation == op).map(|c| (c.calls, c.errors)).expect("op")
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_transient() {
        let url = format!("http://127.0.0.1:{}", free_port());
        let creds = Credentials::new("testing", "testing", None, None, "test");
        let loader =
            loader("us-east-1").endpoint_url(url).credentials_provider(creds).retry_config(RetryConfig::disabled());
        let ec2 = Ec2::from_loader("us-east-1", loader, None, Arc::new(())).await;
        let err = ec2.read_state("vpc-1", &Limits::new(Default::default())).await.expect_err("no server");
        eprintln!("unreachable: {err}");
        assert!(matches!(err, Ec2Error::Transport { .. }), "{err:?}");
        assert!(err.is_transient());
        assert_eq!(counts(&ec2, "DescribeVpcs"), (1, 1));
    }

    #[tokio::test]
    async fn missing_credentials_are_reported() {
        let url = format!("http://127.0.0.1:{}", free_port());
        let creds = aws_config::profile::ProfileFileCredentialsProvider::builder()
            .profile_name("vpcrouter-test-no-such-profile")
            .build();
        let loader =
            loader("us-east-1").endpoint_url(url).credentials_provider(creds).retry_config(RetryConfig::disabled());
        let ec2 = Ec2::from_loader("us-east-1", loader, None, Arc::new(())).await;
        let err = ec2.read_state("vpc-1", &Limits::new(Default::default())).await.expect_err("no credentials");
        eprintln!("no credentials: {err}");
        assert!(matches!(err, Ec2Error::NoCredentials { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("set AWS credentials (env, profile or instance role)"));
    }
}
