//! The notifiers of a run (`--notify`): the notifier plugins and the built-in `sns`, each
//! behind a bounded queue of the hub (`vpcrouter-notify`), and the drains' changes told as
//! `drained` and `undrained` events.

use std::sync::Arc;
use std::time::Duration;

use vpcrouter_drains::{DrainSet, Drains};
use vpcrouter_ec2::role::RoleConfig;
use vpcrouter_ec2::{Connected, SnsPublisher, TopicArn};
use vpcrouter_notify::{Event, Notifiers, Rendered, Sink, DEFAULT_QUEUE};
use vpcrouter_plugin_api::{NotifierBox, NotifyEvent};
use vpcrouter_plugin_host::{Endpoints, PluginSet};

/// The notifiers of a run.
pub struct Started {
    /// Every notifier, behind its queue.
    pub hub: Notifiers,
    /// The notifier plugins, in the order of the `PluginSet`'s, for their status.
    pub plugins: Vec<Arc<NotifierBox>>,
}

/// Starts the notifiers: the plugins `--notify` names (in order), then `sns` when given.
/// `cluster`: in cluster mode only the leader speaks for the cluster.
pub fn start(
    plugins: &PluginSet,
    endpoints: &Endpoints,
    sns: Option<&TopicArn>,
    vpc: &Connected,
    role: Option<&RoleConfig>,
    cluster: bool,
) -> anyhow::Result<Started> {
    let mut hub = Notifiers::new(&vpc.vpc_id);
    hub.only_while_leading(cluster);
    let mut started = Vec::new();
    for (name, notifier) in plugins.start_notifiers(endpoints)? {
        let notifier = Arc::new(notifier);
        started.push(notifier.clone());
        hub.add(&name, Arc::new(PluginSink(notifier)), DEFAULT_QUEUE).map_err(anyhow::Error::msg)?;
    }
    if let Some(topic) = sns {
        let publisher = SnsPublisher::connect(&vpc.region, role, topic.clone()).map_err(anyhow::Error::msg)?;
        tracing::info!(topic = %topic, "notifier sns: events are published to the topic");
        hub.add("sns", Arc::new(SnsSink(publisher)), DEFAULT_QUEUE).map_err(anyhow::Error::msg)?;
    }
    Ok(Started { hub, plugins: started })
}

/// Tells `hub` each drain and undrain from now on.
pub fn tell_drains(drains: &Drains, hub: &Notifiers) {
    let hub = hub.clone();
    drains.on_diff(move |before, after| {
        for event in drain_events(before, after) {
            hub.send(event);
        }
    });
}

/// The `drained` and `undrained` events of one change of the drains: a router drained (or
/// with a new reason), a router undrained (with the reason it had).
fn drain_events(before: &DrainSet, after: &DrainSet) -> Vec<Event> {
    let drained = after
        .values()
        .filter(|d| before.get(&d.ip).is_none_or(|b| b.reason != d.reason))
        .map(|d| Event::Drained { router: d.ip, reason: d.reason.clone() });
    let undrained = before
        .values()
        .filter(|d| !after.contains_key(&d.ip))
        .map(|d| Event::Undrained { router: d.ip, reason: d.reason.clone() });
    drained.chain(undrained).collect()
}

/// A notifier plugin as the hub sees it.
struct PluginSink(Arc<NotifierBox>);

impl Sink for PluginSink {
    fn deliver(&self, event: &Rendered) -> Result<(), String> {
        self.0.deliver(&NotifyEvent { event: event.event.into(), json: event.json.as_str().into() })
    }

    fn stop(&self, within: Duration) -> Result<(), String> {
        self.0.stop_within(within)
    }
}

/// The built-in `sns` notifier.
struct SnsSink(SnsPublisher);

impl Sink for SnsSink {
    fn deliver(&self, event: &Rendered) -> Result<(), String> {
        self.0.publish(event.event, &event.json)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use vpcrouter_drains::Drain;

    use super::*;

    fn set(list: &[(&str, &str)]) -> DrainSet {
        list.iter()
            .map(|(ip, reason)| {
                let ip: Ipv4Addr = ip.parse().unwrap();
                (ip, Drain::now(ip, reason))
            })
            .collect()
    }

    #[test]
    fn drains_and_undrains_become_events_with_their_reasons() {
        let before = set(&[("10.0.0.1", "patching"), ("10.0.0.2", "old")]);
        let after = set(&[("10.0.0.2", "new reason"), ("10.0.0.3", "")]);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            drain_events(&before, &after),
            [
                Event::Drained { router: ip("10.0.0.2"), reason: "new reason".into() },
                Event::Drained { router: ip("10.0.0.3"), reason: String::new() },
                Event::Undrained { router: ip("10.0.0.1"), reason: "patching".into() },
            ]
        );
        assert!(drain_events(&after, &after).is_empty());
    }
}
