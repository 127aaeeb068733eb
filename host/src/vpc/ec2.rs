//! The EC2 adapter: reads a VPC into a [`VpcState`] and executes [`RouteAction`]s.
//!
//! Only translation between EC2 and the model, and error classification, live here; every
//! decision is the planner's. Each method makes single attempts: retries, the token buckets
//! and the cap on calls in flight are the executor's ([`super::executor`]); the SDK's own
//! retries are off. Timeouts are the SDK's, configured in [`Ec2::connect`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types as ec2;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use tracing::debug;

use super::limits::Limits;
use super::model::{
    Applied, Cidr, Dest, Eni, Family, Group, Instance, PrefixList, Route, RouteAction, RouteTable, RouterTarget,
    Subnet, VpcState,
};
use super::role::RoleConfig;
use crate::metrics::Metrics;
use crate::sync::lock;

/// The EC2 operations the adapter uses, in [`Ec2::call_counts`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    DescribeVpcs,
    DescribeSubnets,
    DescribeRouteTables,
    DescribeInstances,
    DescribeManagedPrefixLists,
    GetManagedPrefixListEntries,
    CreateRoute,
    ReplaceRoute,
    DeleteRoute,
    CreateManagedPrefixList,
    ModifyManagedPrefixList,
    DeleteManagedPrefixList,
}

/// How many operations [`Op`] has.
const OPS: usize = 12;

impl Op {
    const ALL: [Op; OPS] = [
        Op::DescribeVpcs,
        Op::DescribeSubnets,
        Op::DescribeRouteTables,
        Op::DescribeInstances,
        Op::DescribeManagedPrefixLists,
        Op::GetManagedPrefixListEntries,
        Op::CreateRoute,
        Op::ReplaceRoute,
        Op::DeleteRoute,
        Op::CreateManagedPrefixList,
        Op::ModifyManagedPrefixList,
        Op::DeleteManagedPrefixList,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::DescribeVpcs => "DescribeVpcs",
            Op::DescribeSubnets => "DescribeSubnets",
            Op::DescribeRouteTables => "DescribeRouteTables",
            Op::DescribeInstances => "DescribeInstances",
            Op::DescribeManagedPrefixLists => "DescribeManagedPrefixLists",
            Op::GetManagedPrefixListEntries => "GetManagedPrefixListEntries",
            Op::CreateRoute => "CreateRoute",
            Op::ReplaceRoute => "ReplaceRoute",
            Op::DeleteRoute => "DeleteRoute",
            Op::CreateManagedPrefixList => "CreateManagedPrefixList",
            Op::ModifyManagedPrefixList => "ModifyManagedPrefixList",
            Op::DeleteManagedPrefixList => "DeleteManagedPrefixList",
        }
    }
}

pub use super::model::{CLUSTER_TAG, GROUP_TAG};
/// Entries one CreateManagedPrefixList or ModifyManagedPrefixList call may carry.
const ENTRIES_PER_CALL: usize = 100;
/// Calls a list change waits through while EC2 finishes the previous one (`IncorrectState`).
const LIST_BUSY_RETRIES: u32 = 12;

/// Every EC2 API operation the adapter can call (the IAM policy must allow exactly these).
pub fn operations() -> Vec<&'static str> {
    Op::ALL.iter().map(|op| op.name()).collect()
}

/// Calls, errors and throttled answers per operation (indexed like [`Op::ALL`]).
#[derive(Debug, Default)]
struct Counters {
    calls: [AtomicU64; OPS],
    errors: [AtomicU64; OPS],
    throttled: [AtomicU64; OPS],
}

/// One operation's counters, as [`Ec2::call_counts`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCount {
    /// e.g. `ReplaceRoute`.
    pub operation: &'static str,
    /// Calls made (attempts).
    pub calls: u64,
    /// Calls that failed, throttled ones included.
    pub errors: u64,
    /// Calls EC2 throttled (`RequestLimitExceeded` and the like).
    pub throttled: u64,
}

/// Error codes EC2 uses when the account's request rate is exceeded.
const THROTTLE_CODES: &[&str] = &[
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "EC2ThrottledException",
];

/// Error codes EC2 uses for server-side trouble (worth retrying later), besides throttling.
const TRANSIENT_CODES: &[&str] = &[
    "BandwidthLimitExceeded", "PriorRequestNotComplete", "RequestTimeout", "RequestTimeoutException", "InternalError",
    "InternalFailure", "ServiceUnavailable", "Unavailable",
];

/// Error codes meaning the credentials are wrong, expired or lack permission.
const AUTH_CODES: &[&str] = &[
    "AuthFailure", "UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "InvalidClientTokenId",
    "SignatureDoesNotMatch", "OptInRequired", "Blocked", "ExpiredToken", "RequestExpired",
];

/// What went wrong talking to EC2 or the instance metadata service.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    /// No credentials could be loaded.
    #[error("{operation}: no AWS credentials found: set AWS credentials (env, profile or instance role) ({message})")]
    NoCredentials {
        /// EC2 operation.
        operation: &'static str,
        /// Details.
        message: String,
    },
    /// The credentials were rejected or lack permission.
    #[error("{operation}: access denied ({code}): {message}; check the AWS credentials and that their IAM policy allows the calls listed in packaging/iam-policy.json (ec2:{operation} among them)")]
    AccessDenied {
        /// EC2 operation.
        operation: &'static str,
        /// EC2 error code.
        code: String,
        /// EC2 error message.
        message: String,
    },
    /// The VPC does not exist in the region.
    #[error("VPC '{vpc_id}' not found in region '{region}': check -v/--vpc and -r/--region")]
    VpcNotFound {
        /// The VPC asked for.
        vpc_id: String,
        /// The region searched.
        region: String,
    },
    /// EC2 refused the request (validation, unknown route table or route, ...).
    #[error("{operation} rejected by EC2 ({code}): {message}")]
    Rejected {
        /// EC2 operation.
        operation: &'static str,
        /// EC2 error code.
        code: String,
        /// EC2 error message.
        message: String,
    },
    /// EC2 throttled the request or failed on its side, after the SDK's retries.
    #[error("{operation}: EC2 throttled or unavailable ({code}): {message}; transient, try again later")]
    Unavailable {
        /// EC2 operation.
        operation: &'static str,
        /// EC2 error code (or HTTP status).
        code: String,
        /// EC2 error message.
        message: String,
    },
    /// Timeout, connection or DNS failure, or an unreadable response.
    #[error("{operation}: could not talk to EC2 in region '{region}': {message}; check the network, -r/--region and AWS_ENDPOINT_URL")]
    Transport {
        /// EC2 operation.
        operation: &'static str,
        /// Region of the client.
        region: String,
        /// Details.
        message: String,
    },
    /// The role of `--role-arn` could not be assumed (STS refused, or was not reachable, or
    /// there were no source credentials to ask it with).
    #[error("cannot assume role {role}: {reason}: check the trust policy of the role and the source credentials")]
    AssumeRole {
        /// EC2 operation whose credentials were wanted.
        operation: &'static str,
        /// The role's ARN.
        role: String,
        /// What STS said, or why it could not be asked.
        reason: String,
        /// True when STS was unreachable or failed on its side (worth trying again).
        transient: bool,
    },
    /// The instance metadata service did not give region and VPC.
    #[error("cannot read region and VPC from the EC2 instance metadata service ({message}); when not running on EC2, pass -r/--region and -v/--vpc")]
    NoMetadata {
        /// Details.
        message: String,
    },
    /// Anything else (e.g. the request could not be built).
    #[error("{operation}: {message}")]
    Other {
        /// EC2 operation.
        operation: &'static str,
        /// Details.
        message: String,
    },
}

impl Ec2Error {
    /// True for errors that may go away by themselves (throttling, 5xx, timeouts, network);
    /// false for those needing the operator (VPC not found, credentials, validation).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Ec2Error::Unavailable { .. } | Ec2Error::Transport { .. } | Ec2Error::AssumeRole { transient: true, .. }
        )
    }

    /// True when EC2 throttled the call: the account's bucket is empty.
    pub fn is_throttle(&self) -> bool {
        matches!(self, Ec2Error::Unavailable { code, .. } if THROTTLE_CODES.contains(&code.as_str()))
    }

    /// True when EC2 refused a route change because the route or table is not as
    /// vpcrouter believed (gone, already there, unknown target): the VPC must be read again.
    pub fn shows_stale_state(&self) -> bool {
        match self {
            Ec2Error::Rejected { code, message, .. } => {
                code.ends_with("NotFound")
                    || code.contains("AlreadyExists")
                    // ModifyManagedPrefixList from an older version of the list.
                    || code == "PrefixListVersionMismatch"
                    // ReplaceRoute of a route that is not there.
                    || (code == "InvalidParameterValue" && message.contains("no route defined"))
            }
            _ => false,
        }
    }

    /// True when a DeleteRoute found no route (or a DeleteManagedPrefixList no list): what
    /// it was meant to achieve holds.
    pub fn is_route_not_found(&self) -> bool {
        matches!(self, Ec2Error::Rejected { code, .. }
            if code == "InvalidRoute.NotFound" || code == "InvalidRouteNotFound" || code == "InvalidPrefixListID.NotFound")
    }

    /// True when a prefix list is still busy with an earlier change (EC2 applies list
    /// changes asynchronously): the call may be sent again shortly.
    fn is_list_busy(&self) -> bool {
        matches!(self, Ec2Error::Rejected { code, .. } if code == "IncorrectState")
    }

    /// Classifies an SDK error of `op`.
    fn classify<E>(op: Op, region: &str, err: SdkError<E>) -> Ec2Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let operation = op.name();
        if let SdkError::ServiceError(ctx) = &err {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().map_or_else(|| format!("HTTP {status}"), str::to_owned);
            let message = ctx.err().message().unwrap_or_default().to_owned();
            return if AUTH_CODES.contains(&code.as_str()) {
                Ec2Error::AccessDenied { operation, code, message }
            } else if THROTTLE_CODES.contains(&code.as_str())
                || TRANSIENT_CODES.contains(&code.as_str())
                || status >= 500
                || status == 429
            {
                Ec2Error::Unavailable { operation, code, message }
            } else {
                Ec2Error::Rejected { operation, code, message }
            };
        }
        let message = error_chain(&err);
        let transport = Ec2Error::Transport { operation, region: region.to_owned(), message: message.clone() };
        match &err {
            SdkError::TimeoutError(_) | SdkError::ResponseError(_) => transport,
            _ if credentials_missing(&err) => Ec2Error::NoCredentials { operation, message },
            SdkError::DispatchFailure(d) if !d.is_user() => transport,
            _ => Ec2Error::Other { operation, message },
        }
    }
}

/// True when the call failed for want of credentials: the credentials provider's error is
/// among the error's sources (the SDK resolves the identity before sending, and reports its
/// error as a dispatch failure). A provider that timed out does not count: that is a
/// transport problem, not a missing setting.
fn credentials_missing(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return !matches!(c, CredentialsError::ProviderTimedOut(_));
        }
        next = e.source();
    }
    false
}

/// Why the assumed role's credentials could not be had, and whether that may pass by
/// itself, when `err` (an EC2 call's) failed for want of credentials; `None` otherwise.
fn assume_role_failure(err: &(dyn std::error::Error + 'static)) -> Option<(String, bool)> {
    let mut next = Some(err);
    let creds = loop {
        let e = next?;
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            break c;
        }
        next = e.source();
    };
    if let CredentialsError::ProviderTimedOut(_) = creds {
        return Some(("STS did not answer in time".to_owned(), true));
    }
    let mut next = std::error::Error::source(creds);
    while let Some(e) = next {
        if let Some(sts) = e.downcast_ref::<aws_sdk_sts::error::SdkError<AssumeRoleError>>() {
            return Some(match sts {
                SdkError::ServiceError(ctx) => {
                    let status = ctx.raw().status().as_u16();
                    let code = ctx.err().code().map_or_else(|| format!("HTTP {status}"), str::to_owned);
                    let message = ctx.err().message().unwrap_or_default().trim();
                    let transient = status >= 500 || status == 429 || THROTTLE_CODES.contains(&code.as_str());
                    let message = one_line(message.trim_end_matches('.'));
                    let text = if message.is_empty() {
                        format!("STS refused AssumeRole ({code})")
                    } else {
                        format!("STS refused AssumeRole ({code}): {message}")
                    };
                    (text, transient)
                }
                SdkError::DispatchFailure(_) if credentials_missing(sts) => (
                    format!(
                        "no source credentials to call STS with: set AWS credentials (env, profile or instance role) ({})",
                        one_line(&credentials_error_text(sts))
                    ),
                    false,
                ),
                SdkError::DispatchFailure(d) if d.is_user() => (one_line(&error_chain(sts)), false),
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
                    (format!("could not talk to STS: {}", one_line(&error_chain(sts))), true)
                }
                _ => (one_line(&error_chain(sts)), false),
            });
        }
        next = e.source();
    }
    Some((one_line(&error_chain(creds)), false))
}

/// The text of the first credentials provider error among `err`'s sources (with its own
/// sources), or of `err` when there is none.
fn credentials_error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<CredentialsError>().is_some() {
            return error_chain(e);
        }
        next = e.source();
    }
    error_chain(err)
}

/// `text` on one line: lines trimmed and joined by `; ` (by a space after a colon), as the
/// SDK lists the providers of its chain one a line.
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(line);
    }
    out
}

/// An error and its sources, joined by `: ` (repeated texts dropped).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Entries of prefix lists by (id, version).
type ListEntries = BTreeMap<(String, i64), Vec<Cidr>>;

/// A VPC that DescribeVpcs confirmed to exist, with its CIDR blocks.
type ConfirmedVpc = Option<(String, Vec<Cidr>)>;

/// A client for one region; cheap to clone (clones share the connection pool and counters).
#[derive(Clone, Debug)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    region: String,
    counters: Arc<Counters>,
    metrics: Arc<Metrics>,
    /// The VPC DescribeVpcs last confirmed, with the CIDR blocks it reported; later reads
    /// skip that call (a CIDR block associated later shows as a table's `local` route).
    confirmed_vpc: Arc<std::sync::Mutex<ConfirmedVpc>>,
    /// The cluster name whose prefix lists are read (`None`: none are).
    owner: Option<String>,
    /// `--prefix-lists`: the lists are read with every state.
    list_mode: bool,
    /// Whether the last read found lists this cluster owns (true before the first read).
    /// Without list mode, the lists are read only then, or when a route table has a route
    /// to a prefix list: 3 reads per steady reconcile instead of 4.
    lists_seen: Arc<std::sync::atomic::AtomicBool>,
    /// Entries of owned prefix lists by (id, version): read once per version.
    entries: Arc<std::sync::Mutex<ListEntries>>,
    /// The ARN of the role whose credentials the calls are made with (`--role-arn`).
    role: Option<Arc<str>>,
}

/// The SDK configuration loader: standard chain, `region`, no retries (the executor's),
/// timeouts.
fn loader(region: &str) -> aws_config::ConfigLoader {
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

/// A `vpc-id` filter.
fn vpc_filter(vpc_id: &str) -> ec2::Filter {
    ec2::Filter::builder().name("vpc-id").values(vpc_id).build()
}

impl Ec2 {
    /// Builds a client from the standard SDK chain (env, profile, `AWS_ENDPOINT_URL`), with `region`.
    /// Call durations go to `metrics`.
    pub async fn connect(region: &str, metrics: Arc<Metrics>) -> Ec2 {
        Ec2::from_loader(region, loader(region), None, metrics).await
    }

    /// [`Ec2::connect`], with the calls made as `role`: the standard chain's credentials
    /// only sign STS's AssumeRole (in `region`), and the assumed credentials are cached
    /// and renewed before they expire by the client's identity cache (see
    /// [`super::role`]). Nothing is called yet: a role that cannot be assumed shows as
    /// [`Ec2Error::AssumeRole`] on the first call.
    pub async fn connect_as(region: &str, role: Option<&RoleConfig>, metrics: Arc<Metrics>) -> Ec2 {
        Ec2::from_loader(region, loader(region), role, metrics).await
    }

    async fn from_loader(
        region: &str,
        loader: aws_config::ConfigLoader,
        role: Option<&RoleConfig>,
        metrics: Arc<Metrics>,
    ) -> Ec2 {
        let mut conf = loader.load().await;
        if let Some(role) = role {
            let assumed = role.provider(&conf).await;
            conf = conf.into_builder().credentials_provider(assumed).build();
        }
        Ec2 {
            client: aws_sdk_ec2::Client::new(&conf),
            region: region.to_owned(),
            counters: Arc::new(Counters::default()),
            metrics,
            confirmed_vpc: Arc::default(),
            owner: None,
            list_mode: false,
            lists_seen: Arc::new(std::sync::atomic::AtomicBool::new(true)),
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
    fn record<T, E>(&self, op: Op, sent: Instant, result: Result<T, SdkError<E>>) -> Result<T, Ec2Error>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let i = op as usize;
        self.counters.calls[i].fetch_add(1, Ordering::Relaxed);
        self.metrics.observe_call(op.name(), sent.elapsed().as_secs_f64());
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

    /// Reads the VPC: its existence, subnets, route tables, instances and the prefix lists
    /// this cluster owns (up to five Describe calls, run concurrently, plus one per further
    /// page, plus one GetManagedPrefixListEntries per list whose version changed), each call
    /// within `limits`. At steady state without `--prefix-lists`: DescribeSubnets,
    /// -RouteTables and -Instances only (see [`Ec2::routing_through_lists`]).
    pub async fn read_state(&self, vpc_id: &str, limits: &Limits) -> Result<VpcState, Ec2Error> {
        debug!(vpc = vpc_id, region = %self.region, "reading VPC");
        let confirmed = self.lock_confirmed().clone().filter(|(id, _)| id == vpc_id);
        let eager = self.list_mode || self.lists_seen.load(std::sync::atomic::Ordering::Relaxed);
        let (vpcs, subnets, tables, instances, lists) = tokio::join!(
            async {
                match confirmed {
                    Some((_, cidrs)) => Ok(Some(cidrs)),
                    None => self.vpc_cidrs(vpc_id, limits).await,
                }
            },
            self.subnets(vpc_id, limits),
            self.route_tables(vpc_id, limits),
            self.instances(vpc_id, limits),
            async {
                if eager {
                    Some(self.prefix_lists(limits).await)
                } else {
                    None
                }
            },
        );
        let Some(mut cidrs) = vpcs? else {
            return Err(Ec2Error::VpcNotFound { vpc_id: vpc_id.to_owned(), region: self.region.clone() });
        };
        *self.lock_confirmed() = Some((vpc_id.to_owned(), cidrs.clone()));
        let tables = tables?;
        let (instances, not_running) = instances?;
        let local = tables.iter().flat_map(|t| &t.routes).filter(|r| r.other_target.as_deref() == Some("local"));
        cidrs.extend(local.filter_map(|r| r.dest.as_ref().and_then(Dest::cidr)));
        cidrs.sort();
        cidrs.dedup();
        let routes_to_lists = || tables.iter().flat_map(|t| &t.routes).any(|r| matches!(r.dest, Some(Dest::List(_))));
        let (lists, other_lists) = match lists {
            Some(read) => read?,
            None if routes_to_lists() => self.prefix_lists(limits).await?,
            None => Default::default(),
        };
        self.lists_seen.store(!lists.is_empty(), std::sync::atomic::Ordering::Relaxed);
        let state = VpcState {
            vpc_id: vpc_id.to_owned(),
            subnets: subnets?,
            cidrs,
            route_tables: tables,
            instances,
            not_running,
            prefix_lists: lists,
            other_lists,
        };
        debug!(
            vpc = vpc_id,
            subnets = state.subnets.len(),
            route_tables = state.route_tables.len(),
            instances = state.instances.len(),
            "read VPC"
        );
        Ok(state)
    }

    fn lock_confirmed(&self) -> std::sync::MutexGuard<'_, ConfirmedVpc> {
        lock(&self.confirmed_vpc)
    }

    /// The VPC's CIDR blocks (IPv4 and IPv6, associated ones); `None` when the VPC does not
    /// exist.
    async fn vpc_cidrs(&self, vpc_id: &str, limits: &Limits) -> Result<Option<Vec<Cidr>>, Ec2Error> {
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call = self.client.describe_vpcs().filters(vpc_filter(vpc_id)).set_next_token(token).send().await;
            let page = self.record(Op::DescribeVpcs, sent, call)?;
            if let Some(vpc) = page.vpcs().iter().find(|v| v.vpc_id() == Some(vpc_id)) {
                return Ok(Some(vpc_blocks(vpc)));
            }
            token = next_token(page.next_token());
            if token.is_none() {
                return Ok(None);
            }
        }
    }

    async fn subnets(&self, vpc_id: &str, limits: &Limits) -> Result<Vec<Subnet>, Ec2Error> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call = self.client.describe_subnets().filters(vpc_filter(vpc_id)).set_next_token(token).send().await;
            let page = self.record(Op::DescribeSubnets, sent, call)?;
            out.extend(page.subnets().iter().filter_map(subnet));
            token = next_token(page.next_token());
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn route_tables(&self, vpc_id: &str, limits: &Limits) -> Result<Vec<RouteTable>, Ec2Error> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call =
                self.client.describe_route_tables().filters(vpc_filter(vpc_id)).set_next_token(token).send().await;
            let page = self.record(Op::DescribeRouteTables, sent, call)?;
            out.extend(page.route_tables().iter().filter_map(route_table));
            token = next_token(page.next_token());
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// The VPC's instances, and the state of those that are not running (by id).
    async fn instances(
        &self,
        vpc_id: &str,
        limits: &Limits,
    ) -> Result<(Vec<Instance>, BTreeMap<String, String>), Ec2Error> {
        let (mut out, mut not_running) = (Vec::new(), BTreeMap::new());
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call = self.client.describe_instances().filters(vpc_filter(vpc_id)).set_next_token(token).send().await;
            let page = self.record(Op::DescribeInstances, sent, call)?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(translated) = instance(i) else { continue };
                let run_state = i.state().and_then(|s| s.name());
                if let Some(name) = run_state.filter(|n| **n != ec2::InstanceStateName::Running) {
                    not_running.insert(translated.id.clone(), name.as_str().to_owned());
                }
                out.push(translated);
            }
            token = next_token(page.next_token());
            if token.is_none() {
                return Ok((out, not_running));
            }
        }
    }

    /// The prefix lists tagged with this cluster's name, with their entries (read again
    /// only when a list's version changed), and the max entries of every other list (their
    /// routes' weight). Nothing is read without an owner name.
    async fn prefix_lists(&self, limits: &Limits) -> Result<(Vec<PrefixList>, BTreeMap<String, u32>), Ec2Error> {
        let mut others = BTreeMap::new();
        let Some(owner) = &self.owner else { return Ok((Vec::new(), others)) };
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call = self.client.describe_managed_prefix_lists().set_next_token(token).send().await;
            let page = self.record(Op::DescribeManagedPrefixLists, sent, call)?;
            for l in page.prefix_lists() {
                match owned_list(l, owner) {
                    Some(list) => found.push(list),
                    None => {
                        let max = l.max_entries().and_then(|m| u32::try_from(m).ok());
                        if let (Some(id), Some(max)) = (l.prefix_list_id(), max) {
                            others.insert(id.to_owned(), max);
                        }
                    }
                }
            }
            token = next_token(page.next_token());
            if token.is_none() {
                break;
            }
        }
        let mut out = Vec::with_capacity(found.len());
        for mut list in found {
            let key = (list.id.clone(), list.version);
            let cached = lock(&self.entries).get(&key).cloned();
            list.entries = match cached {
                Some(entries) => entries,
                None => {
                    let entries = self.list_entries(&list, limits).await?;
                    lock(&self.entries).insert(key, entries.clone());
                    entries
                }
            };
            out.push(list);
        }
        let live: BTreeSet<(String, i64)> = out.iter().map(|l| (l.id.clone(), l.version)).collect();
        lock(&self.entries).retain(|k, _| live.contains(k));
        Ok((out, others))
    }

    async fn list_entries(&self, list: &PrefixList, limits: &Limits) -> Result<Vec<Cidr>, Ec2Error> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let _slot = limits.read_slot().await;
            let sent = Instant::now();
            let call = self
                .client
                .get_managed_prefix_list_entries()
                .prefix_list_id(&list.id)
                .target_version(list.version)
                .set_next_token(token)
                .send()
                .await;
            let page = self.record(Op::GetManagedPrefixListEntries, sent, call)?;
            out.extend(page.entries().iter().filter_map(|e| e.cidr().and_then(|c| Cidr::parse(c).ok())));
            token = next_token(page.next_token());
            if token.is_none() {
                out.sort();
                out.dedup();
                return Ok(out);
            }
        }
    }

    /// Executes `action`: a route change with exactly one CreateRoute, ReplaceRoute or
    /// DeleteRoute call; a prefix-list change with as many calls as its entries need (the
    /// caller holds a write token for the first; further ones are taken from `limits`).
    /// `token` makes a CreateManagedPrefixList idempotent across the caller's retries.
    ///
    /// New targets are given as NetworkInterfaceId only (pinning the interface that owns
    /// the router's IP); only when the ENI id is unknown (`""`, emulators) as InstanceId.
    pub async fn execute(&self, action: &RouteAction, limits: &Limits, token: &str) -> Result<Applied, Ec2Error> {
        let route_dest = |dest: &Dest| match dest {
            Dest::Cidr(c) if c.family() == Family::V4 => (Some(c.to_string()), None, None),
            Dest::Cidr(c) => (None, Some(c.to_string()), None),
            Dest::List(id) => (None, None, Some(id.clone())),
        };
        match action {
            RouteAction::Create { rtb, dest, target } => {
                debug!(rtb = %rtb, cidr = %dest, router = %target.ip, eni = %target.eni_id, "CreateRoute");
                let (eni, inst) = target_ids(target);
                let (v4, v6, list) = route_dest(dest);
                let sent = Instant::now();
                let result = self
                    .client
                    .create_route()
                    .route_table_id(rtb)
                    .set_destination_cidr_block(v4)
                    .set_destination_ipv6_cidr_block(v6)
                    .set_destination_prefix_list_id(list)
                    .set_network_interface_id(eni)
                    .set_instance_id(inst)
                    .send()
                    .await;
                self.record(Op::CreateRoute, sent, result).map(|_| Applied::default())
            }
            RouteAction::Replace { rtb, dest, target, .. } => {
                debug!(rtb = %rtb, cidr = %dest, router = %target.ip, eni = %target.eni_id, "ReplaceRoute");
                let (eni, inst) = target_ids(target);
                let (v4, v6, list) = route_dest(dest);
                let sent = Instant::now();
                let result = self
                    .client
                    .replace_route()
                    .route_table_id(rtb)
                    .set_destination_cidr_block(v4)
                    .set_destination_ipv6_cidr_block(v6)
                    .set_destination_prefix_list_id(list)
                    .set_network_interface_id(eni)
                    .set_instance_id(inst)
                    .send()
                    .await;
                self.record(Op::ReplaceRoute, sent, result).map(|_| Applied::default())
            }
            RouteAction::Delete { rtb, dest, .. } => {
                debug!(rtb = %rtb, cidr = %dest, "DeleteRoute");
                let (v4, v6, list) = route_dest(dest);
                let sent = Instant::now();
                let result = self
                    .client
                    .delete_route()
                    .route_table_id(rtb)
                    .set_destination_cidr_block(v4)
                    .set_destination_ipv6_cidr_block(v6)
                    .set_destination_prefix_list_id(list)
                    .send()
                    .await;
                self.record(Op::DeleteRoute, sent, result).map(|_| Applied::default())
            }
            RouteAction::CreateList { name, group, max_entries } => {
                self.create_list(name, group, *max_entries, limits, token).await
            }
            RouteAction::ModifyList { id, name, version, add, remove } => {
                let version = self.modify_list(id, name, *version, add, remove, limits, false).await?;
                Ok(Applied { list: Some((id.clone(), version)) })
            }
            RouteAction::DeleteList { id, name } => {
                debug!(list = %id, name = %name, "DeleteManagedPrefixList");
                let sent = Instant::now();
                let result = self.client.delete_managed_prefix_list().prefix_list_id(id).send().await;
                self.record(Op::DeleteManagedPrefixList, sent, result).map(|_| Applied::default())
            }
        }
    }

    /// Creates a group's list with its first entries, then adds the rest.
    async fn create_list(
        &self,
        name: &str,
        group: &Group,
        max_entries: u32,
        limits: &Limits,
        token: &str,
    ) -> Result<Applied, Ec2Error> {
        let owner = self.owner.as_deref().unwrap_or_default();
        debug!(name = %name, group = %group.key, entries = group.members.len(), max_entries, "CreateManagedPrefixList");
        let (first, rest) = group.members.split_at(group.members.len().min(ENTRIES_PER_CALL));
        let tag = |k: &str, v: &str| ec2::Tag::builder().key(k).value(v).build();
        let tags = ec2::TagSpecification::builder()
            .resource_type(ec2::ResourceType::PrefixList)
            .tags(tag("Name", name))
            .tags(tag(CLUSTER_TAG, owner))
            .tags(tag(GROUP_TAG, &group.key))
            .build();
        let sent = Instant::now();
        let result = self
            .client
            .create_managed_prefix_list()
            .prefix_list_name(name)
            .address_family(family_name(group.family))
            .max_entries(i32::try_from(max_entries).unwrap_or(i32::MAX))
            .set_entries(Some(entries(first)))
            .tag_specifications(tags)
            .client_token(token)
            .send()
            .await;
        let created = self.record(Op::CreateManagedPrefixList, sent, result)?;
        let list = created.prefix_list();
        let (Some(id), Some(version)) = (list.and_then(|l| l.prefix_list_id()), list.and_then(|l| l.version())) else {
            return Err(Ec2Error::Other {
                operation: Op::CreateManagedPrefixList.name(),
                message: "EC2 answered without the new list's id and version".into(),
            });
        };
        let version = self.modify_list(id, name, version, rest, &[], limits, true).await?;
        Ok(Applied { list: Some((id.to_owned(), version)) })
    }

    /// Adds, then removes, entries in calls of at most 100, each from the version the one
    /// before left; waits while EC2 is still applying the previous change. Returns the
    /// final version. `caller_token_spent`: the caller's write token already paid for an
    /// earlier call (the create), so every call here takes its own.
    #[allow(clippy::too_many_arguments)]
    async fn modify_list(
        &self,
        id: &str,
        name: &str,
        mut version: i64,
        add: &[Cidr],
        remove: &[Cidr],
        limits: &Limits,
        caller_token_spent: bool,
    ) -> Result<i64, Ec2Error> {
        let chunks =
            add.chunks(ENTRIES_PER_CALL).map(|c| (c, true)).chain(remove.chunks(ENTRIES_PER_CALL).map(|c| (c, false)));
        let mut need_token = caller_token_spent;
        for (chunk, adding) in chunks {
            let mut busy = 0;
            loop {
                if need_token {
                    limits.write.take().await;
                }
                need_token = true;
                debug!(list = %id, version, entries = chunk.len(), adding, "ModifyManagedPrefixList");
                let request = self
                    .client
                    .modify_managed_prefix_list()
                    .prefix_list_id(id)
                    .prefix_list_name(name)
                    .current_version(version);
                let request = if adding {
                    request.set_add_entries(Some(entries(chunk)))
                } else {
                    request.set_remove_entries(Some(removals(chunk)))
                };
                let sent = Instant::now();
                let result = request.send().await;
                match self.record(Op::ModifyManagedPrefixList, sent, result) {
                    Ok(out) => {
                        version = out.prefix_list().and_then(|l| l.version()).unwrap_or(version + 1);
                        break;
                    }
                    Err(e) if e.is_list_busy() && busy < LIST_BUSY_RETRIES => {
                        busy += 1;
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(busy.min(4)))).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(version)
    }
}

/// EC2's name of an address family.
fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// Prefix-list entries to add.
fn entries(cidrs: &[Cidr]) -> Vec<ec2::AddPrefixListEntry> {
    cidrs
        .iter()
        .map(|c| ec2::AddPrefixListEntry::builder().cidr(c.to_string()).description("vpcrouter").build())
        .collect()
}

/// Prefix-list entries to remove.
fn removals(cidrs: &[Cidr]) -> Vec<ec2::RemovePrefixListEntry> {
    cidrs.iter().map(|c| ec2::RemovePrefixListEntry::builder().cidr(c.to_string()).build()).collect()
}

/// The list, without entries, when `owner` owns it (its cluster tag); `None` otherwise
/// (AWS-managed lists, other clusters' and other tools' lists).
fn owned_list(l: &ec2::ManagedPrefixList, owner: &str) -> Option<PrefixList> {
    let tag = |key: &str| l.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value());
    if tag(CLUSTER_TAG) != Some(owner) {
        return None;
    }
    if matches!(
        l.state(),
        Some(
            ec2::PrefixListState::DeleteComplete
                | ec2::PrefixListState::DeleteInProgress
                | ec2::PrefixListState::DeleteFailed
        )
    ) {
        return None;
    }
    let family = match l.address_family() {
        Some(f) if f.eq_ignore_ascii_case("IPv6") => Family::V6,
        _ => Family::V4,
    };
    Some(PrefixList {
        id: l.prefix_list_id()?.to_owned(),
        name: l.prefix_list_name().unwrap_or_default().to_owned(),
        group: tag(GROUP_TAG).unwrap_or_default().to_owned(),
        family,
        max_entries: l.max_entries().and_then(|m| u32::try_from(m).ok()).unwrap_or(0),
        version: l.version().unwrap_or(0),
        entries: Vec::new(),
    })
}

/// The next page's token; EC2 ends a listing with none (some emulators with `""`).
fn next_token(token: Option<&str>) -> Option<String> {
    token.filter(|t| !t.is_empty()).map(str::to_owned)
}

/// `(NetworkInterfaceId, InstanceId)` to send for a target: the ENI, else the instance.
fn target_ids(target: &RouterTarget) -> (Option<String>, Option<String>) {
    if target.eni_id.is_empty() {
        (None, Some(target.instance_id.clone()))
    } else {
        (Some(target.eni_id.clone()), None)
    }
}

/// True for an association or CIDR block EC2 reports as `associated` (or without a state).
fn associated(state: Option<&str>) -> bool {
    state.is_none_or(|s| s == "associated")
}

/// The associated IPv4 and IPv6 CIDR blocks of a VPC.
fn vpc_blocks(vpc: &ec2::Vpc) -> Vec<Cidr> {
    let v4 = vpc
        .cidr_block_association_set()
        .iter()
        .filter(|b| associated(b.cidr_block_state().and_then(|s| s.state()).map(|s| s.as_str())))
        .filter_map(|b| b.cidr_block());
    let v6 = vpc
        .ipv6_cidr_block_association_set()
        .iter()
        .filter(|b| associated(b.ipv6_cidr_block_state().and_then(|s| s.state()).map(|s| s.as_str())))
        .filter_map(|b| b.ipv6_cidr_block());
    vpc.cidr_block().into_iter().chain(v4).chain(v6).filter_map(|c| Cidr::parse(c).ok()).collect()
}

/// Translates a subnet: its zone and its associated CIDR blocks; `None` without an id.
fn subnet(s: &ec2::Subnet) -> Option<Subnet> {
    let v6 = s
        .ipv6_cidr_block_association_set()
        .iter()
        .filter(|b| associated(b.ipv6_cidr_block_state().and_then(|s| s.state()).map(|s| s.as_str())))
        .filter_map(|b| b.ipv6_cidr_block());
    Some(Subnet {
        id: s.subnet_id()?.to_owned(),
        zone: s.availability_zone().map(str::to_owned),
        cidrs: s.cidr_block().into_iter().chain(v6).filter_map(|c| Cidr::parse(c).ok()).collect(),
    })
}

/// Translates a route table; `None` without an id.
fn route_table(rt: &ec2::RouteTable) -> Option<RouteTable> {
    let id = rt.route_table_id()?.to_owned();
    let live = |a: &&ec2::RouteTableAssociation| {
        !matches!(
            a.association_state().and_then(|s| s.state()),
            Some(
                ec2::RouteTableAssociationStateCode::Disassociated
                    | ec2::RouteTableAssociationStateCode::Disassociating
                    | ec2::RouteTableAssociationStateCode::Failed
            )
        )
    };
    let associations: Vec<_> = rt.associations().iter().filter(live).collect();
    let table = RouteTable {
        main: associations.iter().any(|a| a.main() == Some(true)),
        subnets: associations.iter().filter_map(|a| a.subnet_id().map(str::to_owned)).collect(),
        routes: rt.routes().iter().map(route).collect(),
        gateways: associations.iter().filter_map(|a| a.gateway_id().map(str::to_owned)).collect(),
        tags: rt
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
            .collect(),
        id,
    };
    for r in &table.routes {
        debug!(
            rtb = %table.id,
            cidr = %r.dest.as_ref().map_or_else(|| "-".to_string(), Dest::to_string),
            router = r.instance_id.as_deref().or(r.eni_id.as_deref()).or(r.other_target.as_deref()).unwrap_or("-"),
            "route"
        );
    }
    Some(table)
}

/// Translates a route.
fn route(r: &ec2::Route) -> Route {
    let other_target = [
        r.gateway_id(),
        r.nat_gateway_id(),
        r.vpc_peering_connection_id(),
        r.transit_gateway_id(),
        r.egress_only_internet_gateway_id(),
        r.local_gateway_id(),
        r.carrier_gateway_id(),
        r.core_network_arn(),
        r.odb_network_arn(),
    ]
    .into_iter()
    .flatten()
    .next()
    .map(str::to_owned);
    let dest = if let Some(v4) = r.destination_cidr_block() {
        Cidr::parse(v4).ok().map(Dest::Cidr)
    } else if let Some(v6) = r.destination_ipv6_cidr_block() {
        Cidr::parse(v6).ok().map(Dest::Cidr)
    } else {
        r.destination_prefix_list_id().map(|id| Dest::List(id.to_owned()))
    };
    Route {
        dest,
        instance_id: r.instance_id().map(str::to_owned),
        eni_id: r.network_interface_id().map(str::to_owned),
        other_target,
        blackhole: r.state() == Some(&ec2::RouteState::Blackhole),
    }
}

/// Parses an IPv4 address reported by EC2, skipping anything else.
fn ipv4(s: Option<&str>) -> Option<Ipv4Addr> {
    s.and_then(|s| s.parse().ok())
}

/// Translates an instance; `None` without an id. Without reported interfaces, one ENI
/// with id `""` is synthesized from the instance's own private IP and subnet. The primary
/// interface's source/destination check is the instance's attribute (the one
/// `modify-instance-attribute` sets; EC2 keeps both equal).
fn instance(i: &ec2::Instance) -> Option<Instance> {
    let id = i.instance_id()?.to_owned();
    let mut enis: Vec<Eni> = i.network_interfaces().iter().filter_map(eni).collect();
    for e in enis.iter_mut().filter(|e| e.device_index == 0) {
        e.source_dest_check = i.source_dest_check().or(e.source_dest_check);
    }
    if i.network_interfaces().is_empty() {
        if let Some(ip) = ipv4(i.private_ip_address()) {
            enis.push(Eni {
                id: String::new(),
                subnet_id: i.subnet_id().unwrap_or_default().to_owned(),
                private_ips: vec![ip],
                device_index: 0,
                source_dest_check: i.source_dest_check(),
            });
        }
    }
    debug!(instance = %id, enis = enis.len(), "instance");
    Some(Instance { id, enis })
}

/// Translates an instance's interface; `None` without an id.
fn eni(n: &ec2::InstanceNetworkInterface) -> Option<Eni> {
    let id = n.network_interface_id()?.to_owned();
    let mut addrs: Vec<&ec2::InstancePrivateIpAddress> = n.private_ip_addresses().iter().collect();
    // Stable: primary first, secondaries in reported order.
    addrs.sort_by_key(|a| a.primary() != Some(true));
    let mut private_ips: Vec<Ipv4Addr> = addrs.iter().filter_map(|a| ipv4(a.private_ip_address())).collect();
    if private_ips.is_empty() {
        private_ips.extend(ipv4(n.private_ip_address()));
    }
    Some(Eni {
        id,
        subnet_id: n.subnet_id().unwrap_or_default().to_owned(),
        private_ips,
        device_index: n.attachment().and_then(|a| a.device_index()).unwrap_or(0),
        source_dest_check: n.source_dest_check(),
    })
}

/// Region and VPC of the instance we run on, from the instance metadata service (IMDSv2),
/// within 2 s. Off EC2 the error tells the user to pass -r/--region and -v/--vpc.
pub async fn detect_region_and_vpc() -> Result<(String, String), Ec2Error> {
    let client = aws_config::imds::Client::builder()
        .max_attempts(2)
        .connect_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_millis(500))
        .operation_timeout(Duration::from_secs(2))
        .build();
    detect_with(&client).await
}

/// [`detect_region_and_vpc`] with a given IMDS client.
async fn detect_with(client: &aws_config::imds::Client) -> Result<(String, String), Ec2Error> {
    let get = |path: String| async move {
        client
            .get(format!("/latest/meta-data/{path}"))
            .await
            .map(|s| s.as_ref().trim().to_owned())
            .map_err(|e| Ec2Error::NoMetadata { message: format!("{path}: {}", error_chain(&e)) })
    };
    let detect = async {
        let region = match get("placement/region".into()).await {
            Ok(region) => region,
            Err(first) => {
                let mut az = get("placement/availability-zone".into()).await.map_err(|_| first)?;
                az.pop();
                az
            }
        };
        let mac = match get("mac".into()).await {
            Ok(mac) => mac,
            Err(_) => {
                let macs = get("network/interfaces/macs/".into()).await?;
                macs.lines().next().unwrap_or_default().trim_end_matches('/').to_owned()
            }
        };
        let vpc = get(format!("network/interfaces/macs/{mac}/vpc-id")).await?;
        if region.is_empty() || mac.is_empty() || vpc.is_empty() {
            return Err(Ec2Error::NoMetadata { message: "empty region, MAC or VPC id".into() });
        }
        debug!(region = %region, vpc = %vpc, "detected from instance metadata");
        Ok((region, vpc))
    };
    match tokio::time::timeout(Duration::from_secs(2), detect).await {
        Ok(result) => result,
        Err(_) => Err(Ec2Error::NoMetadata { message: "no answer within 2 s".into() }),
    }
}

#[cfg(test)]
mod tests {
    /// The statements of `packaging/<file>`.
    fn policy_statements(file: &str) -> Vec<serde_json::Value> {
        let path = format!("{}/../packaging/{file}", env!("CARGO_MANIFEST_DIR"));
        let policy: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("policy file")).expect("policy JSON");
        policy["Statement"].as_array().expect("statements").clone()
    }

    fn actions(statement: &serde_json::Value) -> Vec<String> {
        statement["Action"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect()
    }

    #[test]
    fn iam_policies_allow_exactly_the_operations_called() {
        let mut called: Vec<String> = operations().iter().map(|op| format!("ec2:{op}")).collect();
        // CreateManagedPrefixList tags the new list as it creates it: EC2 authorizes that as
        // ec2:CreateTags.
        called.push("ec2:CreateTags".into());
        called.sort();
        for file in ["iam-policy.json", "iam-policy-scoped.json"] {
            let mut allowed: Vec<String> = policy_statements(file).iter().flat_map(actions).collect();
            allowed.sort();
            assert_eq!(allowed, called, "packaging/{file} is out of step with the EC2 calls in ec2.rs");
        }
    }

    #[test]
    fn the_scoped_policy_allows_writes_only_on_named_resources_under_conditions() {
        for st in policy_statements("iam-policy-scoped.json") {
            let writes = actions(&st).iter().any(|a| !a.starts_with("ec2:Describe") && !a.starts_with("ec2:Get"));
            if !writes {
                continue;
            }
            let resource = st["Resource"].as_str().unwrap_or("*");
            assert!(resource.starts_with("arn:aws:ec2:REGION:ACCOUNT_ID:"), "{st}");
            assert!(st["Condition"].as_object().is_some_and(|c| !c.is_empty()), "a write without a condition: {st}");
        }
    }

    use super::*;
    use aws_sdk_ec2::config::Credentials;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
    }

    fn counts(ec2: &Ec2, op: &str) -> (u64, u64) {
        ec2.call_counts().into_iter().find(|c| c.operation == op).map(|c| (c.calls, c.errors)).expect("op")
    }

    #[test]
    fn multi_line_sdk_texts_become_one_line() {
        let chain = "no credentials found in chain. Attempted:\n  Environment: not set\n  Profile: not enabled\n";
        assert_eq!(
            one_line(chain),
            "no credentials found in chain. Attempted: Environment: not set; Profile: not enabled"
        );
        assert_eq!(one_line("one"), "one");
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_transient() {
        let url = format!("http://127.0.0.1:{}", free_port());
        let creds = Credentials::new("testing", "testing", None, None, "test");
        let loader =
            loader("us-east-1").endpoint_url(url).credentials_provider(creds).retry_config(RetryConfig::disabled());
        let ec2 = Ec2::from_loader("us-east-1", loader, None, Arc::default()).await;
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
        let ec2 = Ec2::from_loader("us-east-1", loader, None, Arc::default()).await;
        let err = ec2.read_state("vpc-1", &Limits::new(Default::default())).await.expect_err("no credentials");
        eprintln!("no credentials: {err}");
        assert!(matches!(err, Ec2Error::NoCredentials { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("set AWS credentials (env, profile or instance role)"));
    }

    #[test]
    fn errors_tell_throttling_and_stale_state_apart() {
        let rejected = |code: &str, message: &str| Ec2Error::Rejected {
            operation: "ReplaceRoute",
            code: code.into(),
            message: message.into(),
        };
        let unavailable =
            |code: &str| Ec2Error::Unavailable { operation: "CreateRoute", code: code.into(), message: String::new() };
        assert!(
            unavailable("RequestLimitExceeded").is_throttle() && unavailable("RequestLimitExceeded").is_transient()
        );
        assert!(!unavailable("InternalError").is_throttle() && unavailable("InternalError").is_transient());
        for stale in [
            rejected("RouteAlreadyExists", "The route identified by 10.1.0.0/16 already exists."),
            rejected("InvalidRoute.NotFound", "no route with destination-cidr-block 10.1.0.0/16"),
            rejected("InvalidRouteTableID.NotFound", "The routeTable ID 'rtb-1' does not exist"),
            rejected("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID 'eni-1' does not exist"),
            rejected("InvalidInstanceID.NotFound", "The instance ID 'i-1' does not exist"),
            rejected(
                "InvalidParameterValue",
                "There is no route defined for '10.1.0.0/16' in the route table. Use CreateRoute instead.",
            ),
        ] {
            assert!(stale.shows_stale_state() && !stale.is_transient(), "{stale:?}");
        }
        assert!(!rejected("InvalidParameterValue", "Value (x) for parameter cidr is invalid").shows_stale_state());
        assert!(!unavailable("RequestLimitExceeded").shows_stale_state());
        assert!(rejected("PrefixListVersionMismatch", "The prefix list has the incorrect version number.")
            .shows_stale_state());
        assert!(rejected("IncorrectState", "modify-in-progress").is_list_busy());
        assert!(!rejected("IncorrectState", "").shows_stale_state());
        assert!(rejected("InvalidPrefixListID.NotFound", "").is_route_not_found());
        assert!(rejected("InvalidRoute.NotFound", "").is_route_not_found());
        assert!(!rejected("RouteAlreadyExists", "").is_route_not_found());
    }

    #[test]
    fn translates_instances_and_routes() {
        let addr = |ip: &str, primary: bool| {
            ec2::InstancePrivateIpAddress::builder().private_ip_address(ip).primary(primary).build()
        };
        let nic = ec2::InstanceNetworkInterface::builder()
            .network_interface_id("eni-1")
            .subnet_id("subnet-1")
            .private_ip_addresses(addr("10.0.0.9", false))
            .private_ip_addresses(addr("10.0.0.5", true))
            .private_ip_addresses(addr("not-an-ip", false))
            .attachment(ec2::InstanceNetworkInterfaceAttachment::builder().device_index(1).build())
            .build();
        let with_nic = ec2::Instance::builder().instance_id("i-1").network_interfaces(nic).build();
        let got = instance(&with_nic).expect("instance");
        assert_eq!(got.enis[0].private_ips, vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 9)]);
        assert_eq!(got.enis[0].device_index, 1);

        let bare =
            ec2::Instance::builder().instance_id("i-2").private_ip_address("10.0.0.7").subnet_id("subnet-2").build();
        let got = instance(&bare).expect("instance");
        assert_eq!(
            got.enis,
            vec![Eni {
                id: String::new(),
                subnet_id: "subnet-2".into(),
                private_ips: vec![Ipv4Addr::new(10, 0, 0, 7)],
                device_index: 0,
                source_dest_check: None,
            }]
        );
        assert!(instance(&ec2::Instance::builder().build()).is_none());

        let v6 =
            ec2::Route::builder().destination_ipv6_cidr_block("::/0").egress_only_internet_gateway_id("eigw-1").build();
        assert_eq!(
            route(&v6),
            Route {
                dest: Some(Dest::Cidr(Cidr::parse("::/0").expect("cidr"))),
                instance_id: None,
                eni_id: None,
                other_target: Some("eigw-1".into()),
                blackhole: false,
            }
        );
        let dropped = ec2::Route::builder()
            .destination_cidr_block("10.1.0.0/16")
            .instance_id("i-1")
            .state(ec2::RouteState::Blackhole)
            .build();
        assert!(route(&dropped).blackhole);
        let listed = ec2::Route::builder().destination_prefix_list_id("pl-1").network_interface_id("eni-1").build();
        assert!(!route(&listed).blackhole);
        assert_eq!(route(&listed).dest, Some(Dest::List("pl-1".into())));
        assert_eq!(route(&listed).eni_id.as_deref(), Some("eni-1"));
        let v6 = ec2::Route::builder().destination_ipv6_cidr_block("2001:db8::/32").instance_id("i-1").build();
        assert_eq!(route(&v6).dest, Some(Dest::Cidr(Cidr::parse("2001:db8::/32").expect("cidr"))));
        let nat = ec2::Route::builder().destination_cidr_block("0.0.0.0/0").nat_gateway_id("nat-1").build();
        assert_eq!(route(&nat).other_target.as_deref(), Some("nat-1"));
    }

    #[test]
    fn translates_zones_tags_gateways_and_the_vpcs_blocks() {
        let v6 = |cidr: &str, state: ec2::SubnetCidrBlockStateCode| {
            ec2::SubnetIpv6CidrBlockAssociation::builder()
                .ipv6_cidr_block(cidr)
                .ipv6_cidr_block_state(ec2::SubnetCidrBlockState::builder().state(state).build())
                .build()
        };
        let s = ec2::Subnet::builder()
            .subnet_id("subnet-1")
            .availability_zone("us-east-1b")
            .cidr_block("10.0.1.0/24")
            .ipv6_cidr_block_association_set(v6("2001:db8:1::/64", ec2::SubnetCidrBlockStateCode::Associated))
            .ipv6_cidr_block_association_set(v6("2001:db8:2::/64", ec2::SubnetCidrBlockStateCode::Disassociated))
            .build();
        let got = subnet(&s).expect("subnet");
        let cidrs: Vec<String> = got.cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(
            (got.zone.as_deref(), cidrs),
            (Some("us-east-1b"), vec!["10.0.1.0/24".into(), "2001:db8:1::/64".into()])
        );

        let gateway = ec2::RouteTableAssociation::builder().gateway_id("igw-1").build();
        let subnet_assoc = ec2::RouteTableAssociation::builder().subnet_id("subnet-1").build();
        let rt = ec2::RouteTable::builder()
            .route_table_id("rtb-1")
            .associations(gateway)
            .associations(subnet_assoc)
            .tags(ec2::Tag::builder().key("vpcrouter:managed").value("true").build())
            .tags(ec2::Tag::builder().key("empty").build())
            .build();
        let got = route_table(&rt).expect("table");
        assert_eq!(got.gateway(), Some("igw-1"));
        assert_eq!(got.subnets, ["subnet-1"]);
        assert_eq!(got.tags.get("vpcrouter:managed").map(String::as_str), Some("true"));
        assert_eq!(got.tags.get("empty").map(String::as_str), Some(""));

        let block = |cidr: &str| {
            ec2::VpcCidrBlockAssociation::builder()
                .cidr_block(cidr)
                .cidr_block_state(
                    ec2::VpcCidrBlockState::builder().state(ec2::VpcCidrBlockStateCode::Associated).build(),
                )
                .build()
        };
        let vpc =
            ec2::Vpc::builder().cidr_block("10.0.0.0/16").cidr_block_association_set(block("10.1.0.0/16")).build();
        let blocks: Vec<String> = vpc_blocks(&vpc).iter().map(ToString::to_string).collect();
        assert_eq!(blocks, ["10.0.0.0/16", "10.1.0.0/16"]);

        let nic = ec2::InstanceNetworkInterface::builder()
            .network_interface_id("eni-1")
            .private_ip_address("10.0.1.5")
            .source_dest_check(true)
            .build();
        let nat = ec2::Instance::builder().instance_id("i-1").network_interfaces(nic).source_dest_check(false).build();
        let got = instance(&nat).expect("instance");
        assert_eq!(got.enis[0].source_dest_check, Some(false), "the primary interface's check is the instance's");
    }

    /// A tiny IMDSv2 imitation answering `paths` (relative to `/latest/meta-data/`).
    fn fake_imds(paths: &'static [(&'static str, &'static str)]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or_default();
                let body = if path == "/latest/api/token" {
                    Some("token")
                } else {
                    path.strip_prefix("/latest/meta-data/")
                        .and_then(|p| paths.iter().find(|(k, _)| *k == p))
                        .map(|(_, v)| *v)
                };
                let (status, body) = body.map_or(("404 Not Found", ""), |b| ("200 OK", b));
                let _ = write!(
                    &stream,
                    "HTTP/1.1 {status}\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    fn imds_client(url: &str) -> aws_config::imds::Client {
        aws_config::imds::Client::builder().endpoint(url).expect("endpoint").max_attempts(2).build()
    }

    #[tokio::test]
    async fn detects_region_and_vpc() {
        let url = fake_imds(&[
            ("placement/region", "eu-west-1"),
            ("mac", "0a:00:00:00:00:01"),
            ("network/interfaces/macs/0a:00:00:00:00:01/vpc-id", "vpc-123"),
        ]);
        let got = detect_with(&imds_client(&url)).await.expect("detect");
        assert_eq!(got, ("eu-west-1".to_owned(), "vpc-123".to_owned()));

        let url = fake_imds(&[
            ("placement/availability-zone", "ap-south-2b"),
            ("network/interfaces/macs/", "0a:00:00:00:00:02/\n0a:00:00:00:00:03/"),
            ("network/interfaces/macs/0a:00:00:00:00:02/vpc-id", "vpc-456"),
        ]);
        let got = detect_with(&imds_client(&url)).await.expect("detect (fallbacks)");
        assert_eq!(got, ("ap-south-2".to_owned(), "vpc-456".to_owned()));
    }

    #[tokio::test]
    async fn off_ec2_asks_for_region_and_vpc() {
        let started = std::time::Instant::now();
        let url = format!("http://127.0.0.1:{}", free_port());
        let err = detect_with(&imds_client(&url)).await.expect_err("no IMDS");
        eprintln!("off EC2: {err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(err.to_string().contains("pass -r/--region and -v/--vpc"), "{err}");
        assert!(!err.is_transient());
    }
}
