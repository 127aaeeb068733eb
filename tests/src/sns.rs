//! An SNS topic in moto with an SQS queue subscribed to it, made and read through boto3 in
//! moto's own virtualenv (no SNS or SQS SDK in the tests), to see what vpcrouter publishes.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::moto::{moto_server, Moto};
use crate::wait_for;

/// Makes the topic and the queue, subscribes the queue (envelopes, not raw messages), and
/// prints `{"topic_arn": ..., "queue_url": ...}`. Arguments: endpoint, name.
const CREATE: &str = r#"
import json, sys, boto3
endpoint, name = sys.argv[1], sys.argv[2]
sns = boto3.client("sns", endpoint_url=endpoint)
sqs = boto3.client("sqs", endpoint_url=endpoint)
topic_arn = sns.create_topic(Name=name)["TopicArn"]
queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
print(json.dumps({"topic_arn": topic_arn, "queue_url": queue_url}))
"#;

/// Polls the queue until it has messages or the deadline passes, deletes what it got, and
/// prints the bodies as a JSON list of strings. Arguments: endpoint, queue URL, seconds.
const RECEIVE: &str = r#"
import json, sys, time, boto3
endpoint, queue_url, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
sqs = boto3.client("sqs", endpoint_url=endpoint)
bodies = []
while not bodies and time.monotonic() < deadline:
    for m in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
        bodies.append(m["Body"])
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
print(json.dumps(bodies))
"#;

/// How long the python side may take beyond its own deadline (interpreter and boto3 start).
const PYTHON_SLACK: Duration = Duration::from_secs(20);

/// An SNS topic in moto and the SQS queue subscribed to it.
#[derive(Debug, Clone)]
pub struct SnsQueue {
    /// The topic's ARN: what vpcrouter is told to publish to.
    pub topic_arn: String,
    /// The subscribed queue, where each published message lands as an SNS envelope.
    pub queue_url: String,
    /// moto's endpoint, for the python calls.
    endpoint: String,
    /// The python of moto's virtualenv (it has boto3, a dependency of moto).
    python: PathBuf,
}

impl SnsQueue {
    /// Makes topic `name` and queue `name` in `moto` (region us-east-1, moto's default
    /// account) and subscribes the queue to the topic.
    pub fn create(moto: &Moto, name: &str) -> anyhow::Result<SnsQueue> {
        let python = moto_python();
        let out = run_python(&python, CREATE, &[&moto.endpoint, name], PYTHON_SLACK)?;
        let v: serde_json::Value = serde_json::from_str(out.trim()).with_context(|| format!("create printed {out}"))?;
        let field = |k: &str| v[k].as_str().map(str::to_owned).with_context(|| format!("no {k} in {out}"));
        Ok(SnsQueue {
            topic_arn: field("topic_arn")?,
            queue_url: field("queue_url")?,
            endpoint: moto.endpoint.clone(),
            python,
        })
    }

    /// The SNS envelopes (parsed JSON: `Message`, `Subject`, `MessageAttributes`, ...) of the
    /// messages that reached the queue, polled until there is at least one or `timeout`
    /// passes (then the list is empty). Received messages are deleted from the queue.
    pub fn receive_within(&self, timeout: Duration) -> anyhow::Result<Vec<serde_json::Value>> {
        let seconds = format!("{:.1}", timeout.as_secs_f64());
        let out =
            run_python(&self.python, RECEIVE, &[&self.endpoint, &self.queue_url, &seconds], timeout + PYTHON_SLACK)?;
        let bodies: Vec<String> = serde_json::from_str(out.trim()).with_context(|| format!("receive printed {out}"))?;
        bodies.iter().map(|b| serde_json::from_str(b).with_context(|| format!("not an SNS envelope: {b}"))).collect()
    }
}

/// The python beside `moto_server` in its virtualenv.
pub fn moto_python() -> PathBuf {
    moto_server().with_file_name("python")
}

/// Runs `script` with `args` under `python` with dummy credentials (us-east-1), waits at
/// most `timeout` (then kills it), and returns its standard output; fails on a non-zero exit
/// with its standard error.
fn run_python(python: &Path, script: &str, args: &[&str], timeout: Duration) -> anyhow::Result<String> {
    // Files, not pipes: a child blocked on a full pipe would only show as a timeout.
    let (mut stdout, mut stderr) = (tempfile::tempfile()?, tempfile::tempfile()?);
    let mut child = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", crate::world::REGION)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?)
        .spawn()
        .with_context(|| format!("cannot run {}: run 'make venv' (or set VPCROUTER_MOTO_SERVER)", python.display()))?;
    let status = match wait_for(timeout, "python and boto3", || child.try_wait().ok().flatten()) {
        Ok(status) => status,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let (mut out, mut err) = (String::new(), String::new());
    for (file, text) in [(&mut stdout, &mut out), (&mut stderr, &mut err)] {
        file.seek(SeekFrom::Start(0))?;
        file.read_to_string(text)?;
    }
    anyhow::ensure!(status.success(), "python (boto3) failed with {status}: {}", err.trim());
    Ok(out)
}
