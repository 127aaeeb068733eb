//! The fault proxy's EC2 model delays calls before they reach moto and throttles exactly as its token buckets say.
//!
//! The model is `vpcrouter_tests::ec2model`, against a real moto: latency is applied before a
//! call reaches moto, a burst beyond a bucket gets exactly the expected `RequestLimitExceeded`
//! answers, buckets refill at their rate, and concurrent connections wait out their latency in
//! parallel.
//!
//! The client is the plain aws-sdk-ec2 with retries disabled, so every throttle is seen.

use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::Filter;
use aws_sdk_ec2::Client;
use tokio::task::JoinSet;
use vpcrouter_tests::ec2model::{Bucket, Model};
use vpcrouter_tests::faultproxy::FaultProxy;
use vpcrouter_tests::moto::Moto;
use vpcrouter_tests::world;

/// moto, a VPC with an internet gateway and one route table (built directly, no proxy).
struct Setup {
    rt: tokio::runtime::Runtime,
    moto: Moto,
    direct: Client,
    rtb: String,
    igw: String,
}

impl Setup {
    fn new() -> anyhow::Result<Setup> {
        let moto = Moto::start()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let direct = rt.block_on(world::client(&moto.endpoint));
        let (rtb, igw) = rt.block_on(async {
            let vpc = direct.create_vpc().cidr_block("127.0.0.0/16").send().await?;
            let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).context("no vpc id")?.to_string();
            let igw = direct.create_internet_gateway().send().await?;
            let igw = igw.internet_gateway().and_then(|g| g.internet_gateway_id()).context("no igw")?.to_string();
            direct.attach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc_id).send().await?;
            let rt = direct.create_route_table().vpc_id(&vpc_id).send().await?;
            let rtb = rt.route_table().and_then(|t| t.route_table_id()).context("no rtb id")?.to_string();
            anyhow::Ok((rtb, igw))
        })?;
        Ok(Setup { rt, moto, direct, rtb, igw })
    }

    /// An SDK client for `proxy` that never retries.
    fn client(&self, proxy: &FaultProxy) -> Client {
        let c = self.rt.block_on(world::client(&proxy.endpoint));
        Client::from_conf(c.config().to_builder().retry_config(RetryConfig::disabled()).build())
    }

    /// Routes of the table, read from moto directly.
    fn routes(&self) -> anyhow::Result<Vec<String>> {
        self.rt.block_on(self.read_routes())
    }

    async fn read_routes(&self) -> anyhow::Result<Vec<String>> {
        let out = self.direct.describe_route_tables().route_table_ids(&self.rtb).send().await?;
        let table = out.route_tables().first().context("route table not found")?;
        Ok(table.routes().iter().filter_map(|r| r.destination_cidr_block().map(str::to_string)).collect())
    }
}

/// The outcome of one call: Ok, or the EC2 error code.
type Outcome = Result<(), String>;

fn code<E: ProvideErrorMetadata>(e: E) -> String {
    e.code().unwrap_or("no code").to_string()
}

/// Sends `CreateRoute` for `10.N.0.0/16` with N in `ns`, all at once (each at `at` or now).
fn create_routes(
    s: &Setup,
    c: &Client,
    ns: impl Iterator<Item = u32>,
    at: impl Fn(u32) -> Option<Instant>,
) -> Vec<Outcome> {
    s.rt.block_on(async {
        let mut set = JoinSet::new();
        for n in ns {
            let req = c
                .create_route()
                .route_table_id(&s.rtb)
                .destination_cidr_block(format!("10.{n}.0.0/16"))
                .gateway_id(&s.igw);
            let when = at(n);
            set.spawn(async move {
                if let Some(t) = when {
                    tokio::time::sleep_until(t.into()).await;
                }
                (n, req.send().await.map(drop).map_err(code))
            });
        }
        let mut out = set.join_all().await;
        out.sort_by_key(|(n, _)| *n);
        out.into_iter().map(|(_, r)| r).collect()
    })
}

fn throttled(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| matches!(o, Err(c) if c == "RequestLimitExceeded")).count()
}

#[test]
fn latency_is_applied_before_the_call_reaches_moto() -> anyhow::Result<()> {
    let s = Setup::new()?;
    // A long write latency, so that the check below is early enough on a loaded machine.
    let model = Model { write_latency: Duration::from_millis(500), ..Model::documented() };
    let proxy = FaultProxy::start_model(&s.moto.endpoint, model)?;
    let c = s.client(&proxy);

    let t = Instant::now();
    s.rt.block_on(c.describe_vpcs().send())?;
    let read = t.elapsed();
    assert!(read >= Duration::from_millis(150), "a Describe took {read:?}, less than the read latency");

    // A write is not in moto before its latency has passed, and is once it is answered.
    // (One runtime for everything: the client's pooled connections live on it.)
    let req = c.create_route().route_table_id(&s.rtb).destination_cidr_block("10.9.0.0/16").gateway_id(&s.igw);
    let t = Instant::now();
    let (early, early_at, write) = s.rt.block_on(async {
        let pending = tokio::spawn(req.send());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let early = s.read_routes().await?;
        let early_at = t.elapsed();
        pending.await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        anyhow::Ok((early, early_at, t.elapsed()))
    })?;
    anyhow::ensure!(early_at < Duration::from_millis(450), "the check came too late to prove anything: {early_at:?}");
    assert!(!early.contains(&"10.9.0.0/16".to_string()), "route visible before the write latency: {early:?}");
    assert!(write >= Duration::from_millis(500), "a write took {write:?}, less than the write latency");
    assert!(s.routes()?.contains(&"10.9.0.0/16".to_string()));
    assert_eq!(proxy.tally_since(t).writes, 1);
    Ok(())
}

#[test]
fn a_burst_beyond_the_write_bucket_is_throttled_exactly_and_the_bucket_refills() -> anyhow::Result<()> {
    let s = Setup::new()?;
    // 10 burst, 2 per second: a token every 500 ms, so arrival jitter of tens of ms
    // cannot change the counts.
    let model = Model { write_bucket: Bucket { burst: 10, rate: 2.0 }, ..Model::documented() };
    let proxy = FaultProxy::start_model(&s.moto.endpoint, model)?;
    let c = s.client(&proxy);

    let sent = Instant::now();
    let burst = create_routes(&s, &c, 1..=15, |_| None);
    let window = sent.elapsed();
    assert_eq!(throttled(&burst), 5, "15 writes on a 10-token bucket (answered within {window:?}): {burst:?}");
    assert_eq!(burst.iter().filter(|o| o.is_ok()).count(), 10, "{burst:?}");
    let tally = proxy.tally_since(sent);
    assert_eq!((tally.writes, tally.throttled_writes), (10, 5), "{tally:?}");
    assert_eq!(proxy.throttled_counts().get("CreateRoute"), Some(&5));
    assert!(proxy.calls().iter().filter(|c| c.throttled()).all(|c| c.modelled));
    assert_eq!(s.routes()?.iter().filter(|r| r.starts_with("10.")).count(), 10, "throttled writes must not reach moto");

    // 1.2 s after the burst the bucket has 2.2 to 2.4 tokens: 3 writes, 1 throttled.
    let refill = create_routes(&s, &c, 21..=23, |_| Some(sent + Duration::from_millis(1200)));
    assert_eq!(throttled(&refill), 1, "{refill:?}");

    // At exactly the refill rate (one write per 500 ms on an absolute schedule) nothing is
    // throttled.
    let base = sent + Duration::from_millis(1200);
    let paced = create_routes(&s, &c, 31..=34, |n| Some(base + Duration::from_millis(500 * u64::from(n - 30))));
    assert!(paced.iter().all(|o| o.is_ok()), "{paced:?}");
    Ok(())
}

#[test]
fn many_concurrent_connections_wait_in_parallel_and_reads_have_their_bucket() -> anyhow::Result<()> {
    let s = Setup::new()?;
    // 50 read tokens that never refill (in the test's time), 300 ms per read.
    let model = Model {
        read_latency: Duration::from_millis(300),
        read_bucket: Bucket { burst: 50, rate: 0.001 },
        ..Model::documented()
    };
    let proxy = FaultProxy::start_model(&s.moto.endpoint, model)?;
    let c = s.client(&proxy);
    let t = Instant::now();
    let outcomes: Vec<Outcome> = s.rt.block_on(async {
        let mut set = JoinSet::new();
        for _ in 0..60 {
            let req =
                c.describe_route_tables().filters(Filter::builder().name("route-table-id").values(&s.rtb).build());
            set.spawn(async move { req.send().await.map(drop).map_err(code) });
        }
        set.join_all().await
    });
    let took = t.elapsed();
    assert_eq!(throttled(&outcomes), 10, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 50, "{outcomes:?}");
    assert!(proxy.connections() >= 50, "{} client connections", proxy.connections());
    // Serialised, 50 reads would take 50 × 300 ms = 15 s.
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "60 concurrent reads took {took:?}");
    let tally = proxy.tally_since(t);
    assert_eq!((tally.reads, tally.throttled_reads, tally.writes), (50, 10, 0), "{tally:?}");

    // Without a model: no latency, no throttling. (moto itself may drop one of 60 concurrent
    // connections: this client retries transport errors, which a throttle never is.)
    proxy.set_model(None)?;
    assert_eq!(proxy.model(), None);
    let t = Instant::now();
    let retrying = s.rt.block_on(world::client(&proxy.endpoint));
    let more = create_routes(&s, &retrying, 1..=60, |_| None);
    assert!(more.iter().all(|o| o.is_ok()), "{more:?}");
    assert_eq!(proxy.tally_since(t).throttled_writes, 0);
    Ok(())
}
