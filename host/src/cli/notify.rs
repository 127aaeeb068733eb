//! The notifications' options: `--notify NAME` (repeatable) and the built-in `sns`
//! notifier's `--notify-sns-topic-arn`. The notifier plugins `--notify` names are loaded with
//! the other plugins ([`super::plugins`]) and declare their own options.

use clap::{Arg, ArgAction, ArgMatches, Command};
use vpcrouter_ec2::TopicArn;

use super::CliError;

/// Help heading of the notification options.
const HEADING: &str = "Notifications";

/// The notifier built into the host (it shares the EC2 calls' credentials, region and role),
/// with its `--list-plugins` description.
pub const BUILTIN: [(&str, &str); 1] =
    [("sns", "Publishes each event to an SNS topic (--notify-sns-topic-arn), as the EC2 calls' credentials and role")];

/// The built-in notifiers' options, checked.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// `--notify sns --notify-sns-topic-arn ARN`: the topic events are published to.
    pub sns_topic: Option<TopicArn>,
}

/// Adds the notification options.
pub(super) fn args(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("notify")
            .long("notify")
            .value_name("NAME")
            .action(ArgAction::Append)
            .help_heading(HEADING)
            .help("tell the world when routes move: load notifier NAME (exec, webhook, sns, or a plugin libvpcrouter_notify_NAME.so); repeatable"),
    )
    .arg(
        Arg::new("notify_sns_topic_arn")
            .long("notify-sns-topic-arn")
            .value_name("ARN")
            .help_heading(HEADING)
            .help("with --notify sns: publish each event to this SNS topic (subject 'vpcrouter <event>', message attribute 'event')"),
    )
}

/// True for a notifier built into the host.
pub(super) fn is_builtin(name: &str) -> bool {
    BUILTIN.iter().any(|(n, _)| *n == name)
}

/// The built-in notifiers' options, checked against the names given.
pub(super) fn config(m: &ArgMatches) -> Result<NotifyConfig, CliError> {
    // A name given twice was refused when the notifier plugins were loaded.
    let sns_named = m.get_many::<String>("notify").into_iter().flatten().any(|n| n == "sns");
    let topic = m.get_one::<String>("notify_sns_topic_arn");
    let sns_topic = match (sns_named, topic) {
        (true, None) => {
            return Err(CliError::usage("error: --notify sns needs --notify-sns-topic-arn ARN: the topic to publish to"))
        }
        (false, Some(_)) => {
            return Err(CliError::usage(
                "error: --notify-sns-topic-arn is given, but --notify sns is not: add --notify sns to publish events to the topic",
            ))
        }
        (true, Some(raw)) => Some(
            TopicArn::parse(raw).map_err(|e| CliError::usage(format!("error: --notify-sns-topic-arn: {e}")))?,
        ),
        (false, None) => None,
    };
    Ok(NotifyConfig { sns_topic })
}
