//! Health-gated changes to a service's set of instances, decided by one pure function.
//!
//! A restart, a new version (any restart-class change), a scale and any mix of them is one
//! [`Operation`]: reach `count` instances of the newest generation, never leaving fewer
//! available instances than the operation allows. The service's task asks [`next_step`]
//! what to do whenever an instance changes, carries it out, and asks again.
//!
//! The rules, precisely:
//! - An instance is *available* when it receives traffic (running and passing, or running
//!   without a check); one the operation started, once it has done so for
//!   `min_healthy_time`.
//! - The *floor* is `count - max_unavailable`. While outdated instances are being replaced
//!   and fewer than `count` new ones are available, the operation also keeps the *hold*:
//!   the instances available when it began, less `max_unavailable`. So a version change
//!   that scales 2 → 1 replaces first and removes the surplus last.
//! - Taking down an instance that is not available costs nothing and is always allowed;
//!   taking down an available one is allowed only if what remains is at or above the bar.
//! - With surge, new instances start on new indexes, at most `peak` running at once (the
//!   larger of the count and the instances at the start, plus `surge`), and an outdated
//!   instance is drained and stopped once enough new ones are available. Without surge,
//!   outdated instances are restarted in place, one at a time within the bar.
//! - A new instance that fails to start, or is not available within `healthy_deadline`,
//!   ends the operation ([`Step::Failed`]): the old instances keep serving.

use super::spec::UpdateSpec;
use std::time::{Duration, Instant};

/// `[update]` with its defaults decided for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub surge: u32,
    pub max_unavailable: u32,
    pub min_healthy_time: Duration,
    pub healthy_deadline: Duration,
}

impl Policy {
    /// The policy of an operation towards `count` instances. Unless the spec says: surge is
    /// on (1) for a service with a frontend port or 2 instances or more, and when the spec
    /// asks for `max_unavailable = 0`; `max_unavailable` is 0 with surge (never fewer
    /// available than the count) and 1 without (one at a time, the others available).
    /// Only a single instance without a frontend port is restarted in place by default: a
    /// second copy of a singleton could do harm, and no balancer sends it traffic.
    pub fn resolve(update: &UpdateSpec, count: u32, has_frontend: bool) -> Policy {
        let surge = update.surge.unwrap_or(
            if has_frontend || count >= 2 || update.max_unavailable == Some(0) {
                1
            } else {
                0
            },
        );
        let max_unavailable = update
            .max_unavailable
            .unwrap_or(if surge > 0 { 0 } else { 1 });
        Policy {
            surge,
            // The spec refuses 0 and 0; a policy that could never replace anything is not
            // made here either.
            max_unavailable: if surge == 0 {
                max_unavailable.max(1)
            } else {
                max_unavailable
            },
            min_healthy_time: update.min_healthy_time,
            healthy_deadline: update.healthy_deadline,
        }
    }
}

/// Whether an instance gets traffic, as far as the operation is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Running and passing (or running, without a check) since this moment.
    Passing { since: Instant },
    /// Not (yet) passing: starting, stopping, critical, backing off.
    Pending,
    /// Will not run again without an operator: it failed to start or is in a crash loop.
    Down,
}

/// One instance of the service as the operation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub index: u32,
    /// The generation it was started for; older than the operation's means outdated.
    pub generation: u64,
    pub readiness: Readiness,
    /// When an operation started (or restarted) it, until it has become available (the
    /// caller clears it then).
    pub started: Option<Instant>,
}

/// What the service's task is to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    pub count: u32,
    /// Instances of an older generation are replaced.
    pub generation: u64,
    /// Whether outdated instances are replaced at all (not after an update failed: a scale
    /// then only adds or removes instances).
    pub replace: bool,
    pub policy: Policy,
    /// Available instances kept while outdated ones are being replaced.
    pub hold: u32,
    /// The most instances running at once.
    pub peak: u32,
}

impl Operation {
    /// An operation beginning now over `members`.
    pub fn begin(
        count: u32,
        generation: u64,
        replace: bool,
        policy: Policy,
        members: &[Member],
        now: Instant,
    ) -> Operation {
        let available = members
            .iter()
            .filter(|m| is_available(m, &policy, now))
            .count() as u32;
        let total = members.len() as u32;
        Operation {
            count,
            generation,
            replace,
            policy,
            hold: available.saturating_sub(policy.max_unavailable),
            peak: count.max(total).saturating_add(policy.surge),
        }
    }

    fn outdated(&self, member: &Member) -> bool {
        self.replace && member.generation < self.generation
    }
}

/// One thing for the service's task to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start this many new instances of the operation's generation on free indexes.
    Start(u32),
    /// Restart this instance in place with the newest spec.
    Restart(u32),
    /// Drain and stop this instance for good.
    Remove(u32),
}

/// Why a new instance ended the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It failed to start or went into a crash loop.
    Down,
    /// It was not available within `healthy_deadline`.
    Deadline,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Carry these out, then ask again.
    Act(Vec<Action>),
    /// Nothing to do until an instance changes or `until` passes.
    Wait { until: Option<Instant> },
    /// The service has `count` instances of the newest generation, each started one available.
    Done,
    /// A new instance did not become available: stop it and end the operation.
    Failed { index: u32, failure: Failure },
}

/// The available instances left as the step takes some down, and the bar they keep.
struct Budget {
    up: usize,
    bar: usize,
}

impl Budget {
    /// Whether an instance may be taken down: always when it is not available, else only
    /// if the others keep the bar.
    fn take_down(&mut self, available: bool) -> bool {
        if !available {
            true
        } else if self.up > self.bar {
            self.up -= 1;
            true
        } else {
            false
        }
    }
}

/// Whether `member` counts as available at `now`: passing, and for one an operation
/// started, passing for `min_healthy_time`.
pub fn is_available(member: &Member, policy: &Policy, now: Instant) -> bool {
    match member.readiness {
        Readiness::Passing { since } => {
            member.started.is_none()
                || now.saturating_duration_since(since) >= policy.min_healthy_time
        }
        Readiness::Pending | Readiness::Down => false,
    }
}

/// The next step of `op` over the service's instances (those leaving excluded).
pub fn next_step(op: &Operation, members: &[Member], now: Instant) -> Step {
    let policy = &op.policy;
    let available = |m: &Member| is_available(m, policy, now);
    if op.replace {
        for m in members.iter().filter(|m| !op.outdated(m) && !available(m)) {
            let Some(started) = m.started else { continue };
            if m.readiness == Readiness::Down {
                return Step::Failed {
                    index: m.index,
                    failure: Failure::Down,
                };
            }
            if now.saturating_duration_since(started) >= policy.healthy_deadline {
                return Step::Failed {
                    index: m.index,
                    failure: Failure::Deadline,
                };
            }
        }
    }
    let (outdated, current): (Vec<&Member>, Vec<&Member>) =
        members.iter().partition(|m| op.outdated(m));
    let count = op.count as usize;
    let current_available = current.iter().filter(|m| available(m)).count();
    let floor = op.count.saturating_sub(policy.max_unavailable) as usize;
    let bar = if !outdated.is_empty() && current_available < count {
        floor.max(op.hold as usize)
    } else {
        floor
    };
    let mut budget = Budget {
        up: members.iter().filter(|m| available(m)).count(),
        bar,
    };
    let mut total = members.len();
    let mut actions = Vec::new();

    // Current instances beyond the count: those not serving first, then the highest.
    let mut extra: Vec<&Member> = current.clone();
    extra.sort_by_key(|m| (available(m), std::cmp::Reverse(m.index)));
    let surplus = current.len().saturating_sub(count);
    let mut current_kept = current.len();
    for m in extra.into_iter().take(surplus) {
        if !budget.take_down(available(m)) {
            break;
        }
        actions.push(Action::Remove(m.index));
        total -= 1;
        current_kept -= 1;
    }
    let needed = count.saturating_sub(current_kept);

    let mut outdated = outdated;
    outdated.sort_by_key(|m| (available(m), m.index));
    if policy.surge > 0 {
        // Outdated instances go as new ones make up for them; those not serving at once.
        for m in &outdated {
            if !budget.take_down(available(m)) {
                break;
            }
            actions.push(Action::Remove(m.index));
            total -= 1;
        }
    }
    let start = needed.min((op.peak as usize).saturating_sub(total));
    if start > 0 {
        actions.push(Action::Start(start as u32));
    }
    if policy.surge == 0 {
        // In place: as many as are still needed, within the bar; the rest are surplus and
        // go last (a surplus instance that serves keeps serving until the bar allows).
        let mut in_place = needed - start;
        for m in &outdated {
            if !budget.take_down(available(m)) {
                break;
            }
            if in_place > 0 {
                in_place -= 1;
                actions.push(Action::Restart(m.index));
            } else {
                actions.push(Action::Remove(m.index));
            }
        }
    }
    if !actions.is_empty() {
        return Step::Act(actions);
    }
    let converged = members.len() == count
        && members
            .iter()
            .all(|m| !op.outdated(m) && (m.started.is_none() || available(m)));
    if converged {
        return Step::Done;
    }
    let until = members
        .iter()
        .filter_map(|m| {
            let ready_at = match m.readiness {
                Readiness::Passing { since } if !available(m) => {
                    Some(since + policy.min_healthy_time)
                }
                _ => None,
            };
            let deadline = m
                .started
                .filter(|_| op.replace && !op.outdated(m) && !available(m))
                .map(|s| s + policy.healthy_deadline);
            ready_at.into_iter().chain(deadline).min()
        })
        .min();
    Step::Wait { until }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: Duration = Duration::from_secs(2);
    const MIN_HEALTHY: Duration = Duration::from_secs(3);
    const DEADLINE: Duration = Duration::from_secs(60);

    fn update(surge: Option<u32>, max_unavailable: Option<u32>) -> UpdateSpec {
        UpdateSpec {
            surge,
            max_unavailable,
            min_healthy_time: MIN_HEALTHY,
            healthy_deadline: DEADLINE,
        }
    }

    /// How the instances of one generation behave once started.
    #[derive(Clone, Copy, PartialEq)]
    enum Build {
        /// Passing `BOOT` after it starts.
        Good,
        /// Runs and never passes.
        NeverPasses,
        /// Fails to start.
        Broken,
    }

    #[derive(Clone, Copy)]
    struct Instance {
        index: u32,
        generation: u64,
        passing_from: Option<Instant>,
        down: bool,
        started: Option<Instant>,
    }

    /// A service's instances under a series of operations, on a virtual clock.
    struct World {
        now: Instant,
        instances: Vec<Instance>,
        builds: Vec<Build>,
        /// Every step's actions, in order.
        log: Vec<Vec<Action>>,
        /// The fewest available instances seen after any step.
        min_available: usize,
        /// The most instances running at once.
        max_total: usize,
    }

    impl World {
        /// `n` instances of generation 0, long passing.
        fn new(n: u32) -> World {
            let now = Instant::now() + Duration::from_secs(3600);
            World {
                now,
                instances: (1..=n)
                    .map(|index| Instance {
                        index,
                        generation: 0,
                        passing_from: Some(now - Duration::from_secs(600)),
                        down: false,
                        started: None,
                    })
                    .collect(),
                builds: vec![Build::Good; 4],
                log: Vec::new(),
                min_available: usize::MAX,
                max_total: n as usize,
            }
        }

        fn members(&self) -> Vec<Member> {
            self.instances
                .iter()
                .map(|i| Member {
                    index: i.index,
                    generation: i.generation,
                    readiness: match i.passing_from {
                        _ if i.down => Readiness::Down,
                        Some(since) if since <= self.now => Readiness::Passing { since },
                        _ => Readiness::Pending,
                    },
                    started: i.started,
                })
                .collect()
        }

        fn available(&self, policy: &Policy) -> usize {
            self.members()
                .iter()
                .filter(|m| is_available(m, policy, self.now))
                .count()
        }

        fn launch(&self, generation: u64) -> (Option<Instant>, bool) {
            match self.builds[generation as usize] {
                Build::Good => (Some(self.now + BOOT), false),
                Build::NeverPasses => (None, false),
                Build::Broken => (None, true),
            }
        }

        fn begin(&self, count: u32, generation: u64, policy: Policy) -> Operation {
            Operation::begin(count, generation, true, policy, &self.members(), self.now)
        }

        /// Runs `op` until it ends, or only `steps` steps; returns the last step.
        fn run(&mut self, op: &Operation, steps: usize) -> Step {
            let mut last = Step::Wait { until: None };
            for _ in 0..steps {
                let members = self.members();
                // The runner forgets when an instance started once it is available.
                for (i, m) in self.instances.iter_mut().zip(&members) {
                    if is_available(m, &op.policy, self.now) {
                        i.started = None;
                    }
                }
                let step = next_step(op, &self.members(), self.now);
                match &step {
                    Step::Act(actions) => {
                        self.log.push(actions.clone());
                        for action in actions {
                            self.apply(op, *action);
                        }
                    }
                    Step::Wait { until } => {
                        let next_ready = self
                            .instances
                            .iter()
                            .filter_map(|i| i.passing_from)
                            .filter(|t| *t > self.now)
                            .min();
                        let next = [*until, next_ready].into_iter().flatten().min();
                        self.now = next.expect("a wait with nothing to wait for");
                    }
                    Step::Done | Step::Failed { .. } => return step,
                }
                self.min_available = self.min_available.min(self.available(&op.policy));
                self.max_total = self.max_total.max(self.instances.len());
                last = step;
            }
            last
        }

        fn apply(&mut self, op: &Operation, action: Action) {
            match action {
                Action::Start(n) => {
                    for _ in 0..n {
                        let index = (1..)
                            .find(|i| self.instances.iter().all(|x| x.index != *i))
                            .unwrap_or(0);
                        let (passing_from, down) = self.launch(op.generation);
                        self.instances.push(Instance {
                            index,
                            generation: op.generation,
                            passing_from,
                            down,
                            started: Some(self.now),
                        });
                    }
                }
                Action::Restart(index) => {
                    let (passing_from, down) = self.launch(op.generation);
                    let i = self
                        .instances
                        .iter_mut()
                        .find(|i| i.index == index)
                        .unwrap();
                    *i = Instance {
                        index,
                        generation: op.generation,
                        passing_from,
                        down,
                        started: Some(self.now),
                    };
                }
                Action::Remove(index) => self.instances.retain(|i| i.index != index),
            }
        }

        fn generations(&self) -> Vec<u64> {
            self.instances.iter().map(|i| i.generation).collect()
        }
    }

    const ALL: usize = usize::MAX;

    #[test]
    fn defaults_surge_for_frontends_and_pairs_and_never_lose_capacity() {
        let p = |surge, max, count, frontend| {
            let p = Policy::resolve(&update(surge, max), count, frontend);
            (p.surge, p.max_unavailable)
        };
        assert_eq!(p(None, None, 2, false), (1, 0), "2 instances: never fewer");
        assert_eq!(p(None, None, 1, true), (1, 0), "a frontend: surge");
        assert_eq!(p(None, None, 1, false), (0, 1), "a lone worker: in place");
        assert_eq!(
            p(None, Some(0), 1, false),
            (1, 0),
            "asked for no gap: surge"
        );
        assert_eq!(
            p(Some(0), None, 4, true),
            (0, 1),
            "surge off: one at a time"
        );
        assert_eq!(p(Some(3), Some(2), 4, false), (3, 2));
    }

    #[test]
    fn restart_of_two_surges_one_at_a_time_and_never_drops_below_two() {
        let mut w = World::new(2);
        let op = w.begin(2, 1, Policy::resolve(&update(None, None), 2, true));
        assert_eq!(w.run(&op, ALL), Step::Done);
        assert_eq!(w.generations(), [1, 1]);
        assert_eq!(w.min_available, 2);
        assert_eq!(w.max_total, 3);
        assert_eq!(
            w.log,
            [
                vec![Action::Start(1)],
                vec![Action::Remove(1), Action::Start(1)],
                vec![Action::Remove(2)],
            ]
        );
    }

    #[test]
    fn a_single_instance_restarts_with_surge_and_is_never_gone() {
        let mut w = World::new(1);
        let op = w.begin(1, 1, Policy::resolve(&update(None, None), 1, true));
        assert_eq!(w.run(&op, ALL), Step::Done);
        assert_eq!(w.min_available, 1);
        assert_eq!(w.log, [vec![Action::Start(1)], vec![Action::Remove(1)]]);
        assert_eq!(w.instances[0].index, 2, "the new instance has a new index");
    }

    #[test]
    fn a_new_version_that_scales_two_to_one_replaces_first_then_removes_the_surplus() {
        let mut w = World::new(2);
        let op = w.begin(1, 1, Policy::resolve(&update(None, None), 1, true));
        assert_eq!(w.run(&op, 1), Step::Act(vec![Action::Start(1)]));
        // Both old instances serve until the new one is available.
        assert_eq!(w.run(&op, ALL), Step::Done);
        assert_eq!(
            w.log,
            [
                vec![Action::Start(1)],
                vec![Action::Remove(1), Action::Remove(2)]
            ]
        );
        assert_eq!(w.min_available, 1);
        assert_eq!(w.generations(), [1]);
    }

    #[test]
    fn without_surge_a_version_that_scales_two_to_one_restarts_one_and_removes_the_other_after() {
        let mut w = World::new(2);
        let policy = Policy::resolve(&update(Some(0), None), 1, false);
        let op = w.begin(1, 1, policy);
        assert_eq!(w.run(&op, ALL), Step::Done);
        assert_eq!(
            w.log,
            [vec![Action::Restart(1)], vec![Action::Remove(2)]],
            "never remove one then restart the other"
        );
        assert_eq!(w.min_available, 1);
    }

    #[test]
    fn without_surge_one_restarts_at_a_time_while_the_others_serve() {
        let mut w = World::new(3);
        let op = w.begin(3, 1, Policy::resolve(&update(Some(0), None), 3, false));
        assert_eq!(w.run(&op, ALL), Step::Done);
        assert_eq!(
            w.log,
            [
                vec![Action::Restart(1)],
                vec![Action::Restart(2)],
                vec![Action::Restart(3)]
            ]
        );
        assert_eq!(w.min_available, 2);
        assert_eq!(w.max_total, 3);
    }

    #[test]
    fn scale_two_to_six_starts_four_and_back_to_two_removes_four_at_once() {
        let mut w = World::new(2);
        let policy = Policy::resolve(&update(None, None), 6, true);
        let up = Operation::begin(6, 0, false, policy, &w.members(), w.now);
        assert_eq!(w.run(&up, ALL), Step::Done);
        assert_eq!(w.log, [vec![Action::Start(4)]]);
        w.now += MIN_HEALTHY + BOOT;
        let down = Operation::begin(2, 0, false, policy, &w.members(), w.now);
        assert_eq!(w.run(&down, ALL), Step::Done);
        assert_eq!(
            w.log[1],
            [
                Action::Remove(6),
                Action::Remove(5),
                Action::Remove(4),
                Action::Remove(3)
            ]
        );
        assert_eq!(w.min_available, 2);
    }

    #[test]
    fn a_scale_down_while_new_instances_start_removes_those_first() {
        let mut w = World::new(2);
        let policy = Policy::resolve(&update(None, None), 6, true);
        let up = Operation::begin(6, 0, false, policy, &w.members(), w.now);
        assert_eq!(w.run(&up, 1), Step::Act(vec![Action::Start(4)]));
        w.instances[0].passing_from = None;
        // Instance 1 went critical: 2 is the only one serving, and it stays.
        let down = Operation::begin(2, 0, false, policy, &w.members(), w.now);
        let Step::Act(actions) = next_step(&down, &w.members(), w.now) else {
            panic!("nothing removed");
        };
        assert_eq!(actions.len(), 4);
        assert!(!actions.contains(&Action::Remove(2)), "{actions:?}");
    }

    #[test]
    fn a_new_version_that_never_passes_stops_at_the_deadline_with_the_old_serving() {
        let mut w = World::new(2);
        w.builds[1] = Build::NeverPasses;
        let op = w.begin(2, 1, Policy::resolve(&update(None, None), 2, true));
        let started = w.now;
        assert_eq!(
            w.run(&op, ALL),
            Step::Failed {
                index: 3,
                failure: Failure::Deadline
            }
        );
        assert_eq!(w.now, started + DEADLINE);
        assert_eq!(w.log, [vec![Action::Start(1)]]);
        assert_eq!(w.min_available, 2);
    }

    #[test]
    fn a_new_version_that_cannot_start_stops_at_once() {
        let mut w = World::new(1);
        w.builds[1] = Build::Broken;
        let op = w.begin(1, 1, Policy::resolve(&update(None, None), 1, true));
        assert_eq!(
            w.run(&op, ALL),
            Step::Failed {
                index: 2,
                failure: Failure::Down
            }
        );
        assert_eq!(w.min_available, 1);
    }

    #[test]
    fn a_superseded_operation_converges_to_the_newest_without_dropping_below_the_floor() {
        let mut w = World::new(2);
        let policy = Policy::resolve(&update(None, None), 2, true);
        let restart = w.begin(2, 1, policy);
        // Up to the first old instance removed and the second new one starting.
        for _ in 0..10 {
            if w.generations() == [0, 1, 1] {
                break;
            }
            w.run(&restart, 1);
        }
        assert_eq!(w.generations(), [0, 1, 1]);
        let version = w.begin(2, 2, policy);
        assert_eq!(w.run(&version, ALL), Step::Done);
        assert_eq!(w.generations(), [2, 2]);
        assert_eq!(w.min_available, 2);
        assert!(w.max_total <= 3 + 1, "{}", w.max_total);
    }

    #[test]
    fn an_instance_that_does_not_serve_is_replaced_first() {
        let mut w = World::new(2);
        w.instances[1].down = true;
        let op = w.begin(2, 1, Policy::resolve(&update(None, None), 2, true));
        assert_eq!(
            w.run(&op, 1),
            Step::Act(vec![Action::Remove(2), Action::Start(2)]),
            "no more than count + surge run at once"
        );
        assert_eq!(w.run(&op, ALL), Step::Done);
        assert_eq!(w.min_available, 1);
        assert_eq!(w.generations(), [1, 1]);
    }

    #[test]
    fn an_old_instance_that_just_began_passing_still_serves_and_stays() {
        let mut w = World::new(2);
        for i in &mut w.instances {
            i.passing_from = Some(w.now);
        }
        let op = w.begin(2, 1, Policy::resolve(&update(None, None), 2, true));
        assert_eq!(w.run(&op, 1), Step::Act(vec![Action::Start(1)]));
        assert_eq!(w.run(&op, ALL), Step::Done);
        assert_eq!(w.min_available, 2);
    }

    #[test]
    fn new_instances_count_only_after_min_healthy_time() {
        let mut w = World::new(1);
        let op = w.begin(1, 1, Policy::resolve(&update(None, None), 1, true));
        w.run(&op, 1);
        w.now += BOOT;
        assert_eq!(
            next_step(&op, &w.members(), w.now),
            Step::Wait {
                until: Some(w.now + MIN_HEALTHY)
            }
        );
        w.now += MIN_HEALTHY;
        assert_eq!(
            next_step(&op, &w.members(), w.now),
            Step::Act(vec![Action::Remove(1)])
        );
    }
}
