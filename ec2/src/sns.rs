//! The AWS side of the built-in `sns` notifier: [`TopicArn`], the topic given on the command
//! line (`--notify-sns-topic-arn`), checked once at the edge, and [`SnsPublisher`], which
//! publishes each event to it.
//!
//! The publisher's client is built like the EC2 client (the same credentials chain with
//! `AWS_ENDPOINT_URL`, and `--role-arn` through the same [`RoleConfig`]); see
//! [`crate::client`]. Its calls are blocking: it owns a small runtime of its own, because it
//! runs on a notifier's delivery thread, never on the engine's runtime.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sns::config::retry::RetryConfig;
use aws_sdk_sns::config::timeout::TimeoutConfig;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::operation::publish::PublishError;
use aws_sdk_sns::types::MessageAttributeValue;

use crate::client::{loader, sdk_config};
use crate::error::{assume_role_failure, credentials_missing, error_chain, one_line};
use crate::role::{Arn, RoleConfig};

/// The longest a publish may take, retries and the assumed role's credentials included.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest one attempt may take (SNS answers in milliseconds; a stuck connection is
/// given up for a retry).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a connection to SNS may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Attempts per publish (the SDK's standard retries: throttling, 5xx, network errors).
const MAX_ATTEMPTS: u32 = 3;

/// SNS's limit on a subject's length (ASCII characters).
const MAX_SUBJECT: usize = 100;

/// An SNS topic ARN: `arn:<partition>:sns:<region>:<12-digit account>:<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicArn {
    /// The ARN as given, checked: what Publish is sent to, and what logs and errors show.
    arn: String,
    /// The region taken from the ARN: a topic can only be published to in its own region.
    region: String,
}

impl TopicArn {
    /// Checks `raw`: a known partition, service `sns`, a region, a 12-digit account and a
    /// topic name of 1–256 characters of `A-Z a-z 0-9 _ -` (a FIFO topic's ends in `.fifo`).
    pub fn parse(raw: &str) -> Result<TopicArn, String> {
        let hint = "give arn:aws:sns:<region>:<12-digit account id>:<topic name> (partition aws, aws-cn or aws-us-gov)";
        let bad = |why: &str| format!("'{raw}' is not an SNS topic ARN: {why}; {hint}");
        let Arn { service, region, account: _, resource: name } = Arn::split(raw).map_err(|why| bad(&why))?;
        if service != "sns" {
            return Err(bad(&format!("the service is '{service}', not sns")));
        }
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(bad(&format!("the region '{region}' is not a region name such as us-east-1")));
        }
        let base = name.strip_suffix(".fifo").unwrap_or(name);
        let name_ok = !base.is_empty() && name.len() <= 256;
        if !name_ok || !base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(bad(&format!("the topic name '{name}' is not 1–256 characters of A-Z a-z 0-9 _ -")));
        }
        Ok(TopicArn { arn: raw.to_owned(), region: region.to_owned() })
    }

    /// The ARN as given.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The topic's region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// A FIFO topic: each message needs a group id and a deduplication id.
    fn is_fifo(&self) -> bool {
        self.arn.ends_with(".fifo")
    }
}

impl fmt::Display for TopicArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// Publishes events to one SNS topic, blocking the calling thread for at most
/// [`PUBLISH_TIMEOUT`] per event.
#[derive(Debug)]
pub struct SnsPublisher {
    /// The runtime the SDK's calls run on, owned here: the publisher is called from a
    /// notifier's delivery thread, which has no runtime of its own.
    runtime: tokio::runtime::Runtime,
    /// The SDK's client, in the topic's region.
    client: aws_sdk_sns::Client,
    /// Where every event goes.
    topic: TopicArn,
    /// The ARN of the role the calls are made as (`--role-arn`), named when it cannot be
    /// assumed.
    role: Option<String>,
    /// Events published so far: with the time, the deduplication id of a FIFO topic's
    /// messages (distinct events may have the same JSON).
    sequence: AtomicU64,
}

impl SnsPublisher {
    /// A publisher to `topic`, with the credentials of the standard chain (environment with
    /// `AWS_ENDPOINT_URL`, profile, instance role), as `role` when given: the same as the
    /// EC2 client's.
    ///
    /// SNS topics are regional, so the client calls the topic's region: when it differs
    /// from `region` (the EC2 side's `-r/--region`), the topic's region wins. Nothing is
    /// called yet; a topic that does not exist, or credentials that are refused, show on the
    /// first [`SnsPublisher::publish`]. Must not be called from within an async runtime
    /// (nor may the publisher be dropped there).
    pub fn connect(region: &str, role: Option<&RoleConfig>, topic: TopicArn) -> Result<SnsPublisher, String> {
        if topic.region() != region {
            let topic_region = topic.region();
            tracing::info!(region, topic = %topic, topic_region, "SNS topic is in another region: publishing there");
        }
        SnsPublisher::from_loader(loader(topic.region()), role, topic)
    }

    /// A publisher with `loader`'s configuration (tests pass a loader pointed at their own
    /// endpoint).
    fn from_loader(
        loader: aws_config::ConfigLoader,
        role: Option<&RoleConfig>,
        topic: TopicArn,
    ) -> Result<SnsPublisher, String> {
        refuse_async_context("SnsPublisher::connect")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("vpcrouter-sns")
            .build()
            .map_err(|e| format!("cannot start the runtime of the SNS publisher: {e}"))?;
        let conf = runtime.block_on(sdk_config(loader, role));
        let conf = aws_sdk_sns::config::Builder::from(&conf)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(PUBLISH_TIMEOUT)
                    .build(),
            )
            .build();
        Ok(SnsPublisher {
            runtime,
            client: aws_sdk_sns::Client::from_conf(conf),
            topic,
            role: role.map(|r| r.arn.as_str().to_owned()),
            sequence: AtomicU64::new(0),
        })
    }

    /// The topic events are published to.
    pub fn topic(&self) -> &TopicArn {
        &self.topic
    }

    /// Publishes one event: the message is `json`, the subject `vpcrouter <event>`, and the
    /// message attribute `event` (a String) is `event`, for subscription filter policies.
    /// Blocks for at most [`PUBLISH_TIMEOUT`]; the error is one line naming the topic and
    /// saying what SNS (or the way to it) answered. Must not be called from within an async
    /// runtime.
    pub fn publish(&self, event: &str, json: &str) -> Result<(), String> {
        let fail = |why: String| format!("publish to SNS topic {}: {why}", self.topic);
        refuse_async_context("SnsPublisher::publish").map_err(fail)?;
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(event)
            .build()
            .map_err(|e| fail(format!("cannot make the event attribute: {e}")))?;
        let mut request = self
            .client
            .publish()
            .topic_arn(self.topic.as_str())
            .message(json)
            .subject(subject(event))
            .message_attributes("event", attribute);
        if self.topic.is_fifo() {
            request = request.message_group_id("vpcrouter").message_deduplication_id(self.deduplication_id());
        }
        let sent = Instant::now();
        match self.runtime.block_on(async { tokio::time::timeout(PUBLISH_TIMEOUT, request.send()).await }) {
            Ok(Ok(out)) => {
                let seconds = sent.elapsed().as_secs_f64();
                tracing::debug!(topic = %self.topic, event, message_id = out.message_id(), seconds, "published to SNS");
                Ok(())
            }
            Ok(Err(err)) => Err(fail(self.describe(&err))),
            Err(_) => Err(fail(format!(
                "no answer within {}s; check the network, the topic's region '{}' and AWS_ENDPOINT_URL",
                PUBLISH_TIMEOUT.as_secs(),
                self.topic.region()
            ))),
        }
    }

    /// A deduplication id no other message of this publisher has: the time in nanoseconds
    /// and the sequence number.
    fn deduplication_id(&self) -> String {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        format!("{nanos}-{}", self.sequence.fetch_add(1, Ordering::Relaxed))
    }

    /// What went wrong with a Publish, on one line, with what to check.
    fn describe(&self, err: &SdkError<PublishError>) -> String {
        if let SdkError::ServiceError(ctx) = err {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().map_or_else(|| format!("HTTP {status}"), str::to_owned);
            let message = one_line(ctx.err().message().unwrap_or_default().trim().trim_end_matches('.'));
            let hint = match code.as_str() {
                "NotFound" => "; check --notify-sns-topic-arn",
                "AuthorizationError" | "AccessDenied" | "AccessDeniedException" | "InvalidClientTokenId" => {
                    "; check the AWS credentials and that their IAM policy allows sns:Publish on the topic"
                }
                _ => "",
            };
            return format!("SNS refused Publish ({code}): {message}{hint}");
        }
        let assume_failed = self.role.as_ref().and_then(|role| Some((role, assume_role_failure(err)?)));
        if let Some((role, (reason, _))) = assume_failed {
            return format!(
                "cannot assume role {role}: {reason}: check the trust policy of the role and the source credentials"
            );
        }
        let chain = one_line(&error_chain(err));
        if credentials_missing(err) {
            return format!("no AWS credentials found: set AWS credentials (env, profile or instance role) ({chain})");
        }
        match err {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => format!(
                "could not talk to SNS in region '{}': {chain}; check the network and AWS_ENDPOINT_URL",
                self.topic.region()
            ),
            _ => chain,
        }
    }
}

/// The subject of an event's message: `vpcrouter <event>`, within SNS's rules (printable
/// ASCII, at most 100 characters).
fn subject(event: &str) -> String {
    let text = format!("vpcrouter {event}");
    text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' }).take(MAX_SUBJECT).collect()
}

/// An error when called on a thread that is running an async runtime (where blocking on the
/// publisher's own runtime would panic).
fn refuse_async_context(what: &str) -> Result<(), String> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Err(format!("{what} was called from within an async runtime; call it from a plain thread")),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_arns_of_the_three_partitions_are_taken() {
        for ok in [
            "arn:aws:sns:us-east-1:123456789012:vpcrouter-events",
            "arn:aws-cn:sns:cn-north-1:123456789012:Routes_1",
            "arn:aws-us-gov:sns:us-gov-west-1:000000000000:routes.fifo",
        ] {
            let arn = TopicArn::parse(ok).expect(ok);
            assert_eq!((arn.as_str(), arn.to_string().as_str()), (ok, ok));
        }
        let arn = TopicArn::parse("arn:aws:sns:eu-west-3:123456789012:t").expect("arn");
        assert_eq!(arn.region(), "eu-west-3");
        assert!(!arn.is_fifo());
        assert!(TopicArn::parse("arn:aws:sns:eu-west-3:123456789012:t.fifo").expect("fifo").is_fifo());
    }

    #[test]
    fn malformed_topic_arns_say_what_is_wrong() {
        let err = |raw: &str| TopicArn::parse(raw).expect_err(raw);
        assert!(err("vpcrouter-events").contains("six fields"));
        assert!(err("arn:aws:sns:us-east-1:123456789012").contains("six fields"), "missing name");
        assert!(err("arn:aws:sqs:us-east-1:123456789012:q").contains("the service is 'sqs', not sns"));
        assert!(err("arn:aws-eu:sns:us-east-1:123456789012:t").contains("unknown partition 'aws-eu'"));
        assert!(err("arn:aws:sns::123456789012:t").contains("region ''"));
        assert!(err("arn:aws:sns:US East:123456789012:t").contains("region 'US East'"));
        assert!(err("arn:aws:sns:us-east-1:12345678901:t").contains("'12345678901' is not 12 digits"));
        assert!(err("arn:aws:sns:us-east-1:12345678901a:t").contains("not 12 digits"));
        assert!(err("arn:aws:sns:us-east-1:123456789012:").contains("topic name ''"));
        assert!(err("arn:aws:sns:us-east-1:123456789012:.fifo").contains("topic name '.fifo'"));
        assert!(err("arn:aws:sns:us-east-1:123456789012:a:b").contains("topic name 'a:b'"));
        assert!(err(&format!("arn:aws:sns:us-east-1:123456789012:{}", "t".repeat(257))).contains("1–256"));
        let line = err("arn:aws:sns:us-east-1:1:t");
        assert!(!line.contains('\n') && line.contains("give arn:aws:sns:<region>:<12-digit account id>:<topic name>"));
    }

    #[test]
    fn subjects_are_short_printable_ascii() {
        assert_eq!(subject("failover"), "vpcrouter failover");
        assert_eq!(subject("a\nb\u{e9}"), "vpcrouter a_b_");
        assert_eq!(subject(&"x".repeat(200)).len(), MAX_SUBJECT);
    }

    #[test]
    fn an_unreachable_sns_is_one_line_naming_the_topic() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let creds = aws_sdk_sns::config::Credentials::new("testing", "testing", None, None, "test");
        let loader = loader("us-east-1").endpoint_url(format!("http://127.0.0.1:{port}")).credentials_provider(creds);
        let topic = TopicArn::parse("arn:aws:sns:us-east-1:123456789012:t").expect("arn");
        let publisher = SnsPublisher::from_loader(loader, None, topic).expect("publisher");
        let sent = Instant::now();
        let err = publisher.publish("router_down", r#"{"event":"router_down"}"#).expect_err("nothing listens");
        eprintln!("unreachable: {err}");
        assert!(sent.elapsed() < PUBLISH_TIMEOUT + Duration::from_secs(1), "bounded: {:?}", sent.elapsed());
        assert!(err.starts_with("publish to SNS topic arn:aws:sns:us-east-1:123456789012:t: "), "{err}");
        assert!(err.contains("could not talk to SNS in region 'us-east-1'") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn the_publisher_refuses_to_block_inside_a_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let topic = TopicArn::parse("arn:aws:sns:us-east-1:123456789012:t").expect("arn");
        let err = rt.block_on(async { SnsPublisher::connect("us-east-1", None, topic) }).expect_err("in a runtime");
        assert!(err.contains("from within an async runtime"), "{err}");
    }
}
