//! Waiting for a change to converge (the CLI's `--wait`): every instance of the service,
//! or the one named, runs and passes its health check, at the service's version, as many
//! as desired. [`pending`] decides; [`wait`] polls the agent around it.

use super::connect::call;
use super::ops::Target;
use super::{Client, Failure, FailureKind};
use std::time::{Duration, Instant};
use strata_proto::v1::{GetServiceRequest, InstanceState, InstanceStatus, ServiceStatus};

/// How often the agent is asked while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Polls the agent at `agent` until `target` on `node` has converged; after `timeout`,
/// fails naming the instances that have not.
pub async fn wait(
    client: &mut Client,
    agent: &str,
    node: &str,
    target: &Target,
    timeout: Duration,
) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = call(
            client.get_service(GetServiceRequest {
                node: node.to_string(),
                name: target.service.clone(),
            }),
            agent,
        )
        .await?;
        let Some(why) = pending(&status, target.instance) else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(Failure::new(
                FailureKind::ActionFailed,
                format!(
                    "{} did not converge within {}: {why}",
                    target.service,
                    humantime::format_duration(timeout)
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Why `status` has not converged for `instance` (0: the whole service, which must also
/// run its desired number at its current version), or `None` when it has.
pub fn pending(status: &ServiceStatus, instance: u32) -> Option<String> {
    let has_check = status.health_check != "none";
    let version_ok = |i: &InstanceStatus| instance != 0 || i.version == status.version;
    let waiting: Vec<String> = status
        .instances
        .iter()
        .filter(|i| instance == 0 || i.index == instance)
        .filter(|i| !(ready(i, has_check) && version_ok(i)))
        .map(|i| format!("{} is {}/{}", i.id, i.state(), i.health()))
        .collect();
    let complete = instance != 0 || status.desired_instances as usize == status.instances.len();
    match (waiting.is_empty(), complete) {
        (true, true) => None,
        (true, false) => Some("instances are still being added or removed".to_string()),
        (false, _) => Some(waiting.join(", ")),
    }
}

/// Running, and passing when it has a health check.
fn ready(instance: &InstanceStatus, has_check: bool) -> bool {
    instance.state() == InstanceState::Running && (!has_check || instance.health().is_passing())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::Health;

    /// An instance's state, health and version.
    type Instance = (InstanceState, Health, &'static str);

    /// The service's health check, desired count and instances (indexes from 1), the
    /// instance waited for, and why it has not converged.
    type Case = (
        &'static str,
        u32,
        &'static [Instance],
        u32,
        Option<&'static str>,
    );

    fn service(check: &str, desired: u32, instances: &[Instance]) -> ServiceStatus {
        ServiceStatus {
            name: "web".into(),
            version: "2".into(),
            health_check: check.into(),
            desired_instances: desired,
            instances: (1..)
                .zip(instances)
                .map(|(index, (state, health, version))| InstanceStatus {
                    id: format!("web/{index}"),
                    index,
                    state: *state as i32,
                    health: *health as i32,
                    version: version.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn converged_means_running_passing_current_and_complete() {
        use Health::{Critical, Passing, Unknown};
        use InstanceState::{Running, Starting};
        const UP: Instance = (Running, Passing, "2");
        const SICK: Instance = (Running, Critical, "2");
        const OLD: Instance = (Running, Passing, "1");
        let cases: [Case; 8] = [
            ("http /", 2, &[UP, UP], 0, None),
            (
                "http /",
                2,
                &[UP, SICK],
                0,
                Some("web/2 is running/critical"),
            ),
            ("http /", 2, &[UP, SICK], 1, None),
            ("none", 1, &[(Running, Unknown, "2")], 0, None),
            ("http /", 1, &[OLD], 0, Some("web/1 is running/passing")),
            ("http /", 1, &[OLD], 1, None),
            (
                "http /",
                3,
                &[UP],
                0,
                Some("instances are still being added or removed"),
            ),
            (
                "none",
                1,
                &[(Starting, Unknown, "2")],
                1,
                Some("web/1 is starting/unknown"),
            ),
        ];
        for (check, desired, instances, which, why) in cases {
            let status = service(check, desired, instances);
            assert_eq!(
                pending(&status, which).as_deref(),
                why,
                "{status:?} {which}"
            );
        }
    }
}
