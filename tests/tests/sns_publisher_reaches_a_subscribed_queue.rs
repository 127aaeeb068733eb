//! The `sns` notifier's publisher reaches a queue subscribed to its topic in moto, and names a missing topic.

use std::time::Duration;

use vpcrouter_ec2::{SnsPublisher, TopicArn};
use vpcrouter_tests::moto::Moto;
use vpcrouter_tests::sns::SnsQueue;
use vpcrouter_tests::world::REGION;

/// A failover event as the notifier hands it over.
const FAILOVER: &str = concat!(
    r#"{"event":"failover","time":"2026-12-07T00:00:00Z","vpc":"vpc-1","#,
    r#""routers":["10.1.0.5"],"routes_moved":2,"seconds":0.8}"#
);

/// One test in this binary: it points the SDK's environment chain at its own moto.
#[test]
fn published_events_reach_a_subscribed_queue_and_a_missing_topic_is_named() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    for (k, v) in moto.env() {
        std::env::set_var(k, v);
    }
    let queue = SnsQueue::create(&moto, "vpcrouter-events")?;
    let topic = TopicArn::parse(&queue.topic_arn).map_err(anyhow::Error::msg)?;
    let publisher = SnsPublisher::connect(REGION, None, topic).map_err(anyhow::Error::msg)?;
    publisher.publish("failover", FAILOVER).map_err(anyhow::Error::msg)?;

    let envelopes = queue.receive_within(Duration::from_secs(10))?;
    assert_eq!(envelopes.len(), 1, "one message per event: {envelopes:?}");
    let envelope = &envelopes[0];
    assert_eq!(envelope["Message"], FAILOVER, "{envelope}");
    assert_eq!(envelope["Subject"], "vpcrouter failover", "{envelope}");
    assert_eq!(envelope["MessageAttributes"]["event"]["Value"], "failover", "{envelope}");
    assert_eq!(envelope["MessageAttributes"]["event"]["Type"], "String", "{envelope}");

    let missing = queue.topic_arn.replace("vpcrouter-events", "no-such-topic");
    let topic = TopicArn::parse(&missing).map_err(anyhow::Error::msg)?;
    let publisher = SnsPublisher::connect(REGION, None, topic).map_err(anyhow::Error::msg)?;
    let err = publisher.publish("failover", FAILOVER).expect_err("the topic does not exist");
    eprintln!("missing topic: {err}");
    assert!(err.contains(&missing) && !err.contains('\n'), "one line naming the topic: {err}");
    assert!(err.contains("NotFound"), "SNS's error code: {err}");
    assert!(queue.receive_within(Duration::from_secs(1))?.is_empty(), "nothing more reached the queue");
    Ok(())
}
