//! The sampling loop: once per interval it takes a host sample, stores it in the history,
//! evaluates the alert rules (transitions become journal events) and publishes the sample
//! to every watcher. It runs on its own thread, so a slow /proc read never stalls the API.

use crate::config::AgentConfig;
use crate::metrics::alerts::{AlertEngine, Rule};
use crate::metrics::collect::{Collector, CollectorOptions};
use crate::state::{AgentState, unix_now_ms};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running sampling loop; `stop` ends it and waits for the thread.
pub struct Sampler {
    stop: mpsc::Sender<()>,
    rules: mpsc::Sender<Vec<Rule>>,
    thread: JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling every `config.collect_interval`.
    pub fn start(state: Arc<AgentState>, config: &AgentConfig) -> Result<Sampler> {
        let collector = Collector::new(CollectorOptions {
            top_n: config.top_processes,
            ..CollectorOptions::default()
        });
        let alerts = AlertEngine::new(config.alerts.clone());
        let interval = config.collect_interval;
        let (stop, stopped) = mpsc::channel();
        let (rules, new_rules) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("strata-sampler".into())
            .spawn(move || sample_loop(state, collector, alerts, new_rules, interval, stopped))
            .context("cannot start the sampler thread")?;
        Ok(Sampler {
            stop,
            rules,
            thread,
        })
    }

    /// Evaluates `rules` from the next sample on (a reload).
    pub fn set_alert_rules(&self, rules: Vec<Rule>) {
        if self.rules.send(rules).is_err() {
            tracing::warn!("the sampler thread has ended; alert rules not reloaded");
        }
    }

    /// Stops the loop after the sample in progress.
    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("the sampler thread panicked");
        }
    }
}

fn sample_loop(
    state: Arc<AgentState>,
    mut collector: Collector,
    mut alerts: AlertEngine,
    new_rules: mpsc::Receiver<Vec<Rule>>,
    interval: Duration,
    stopped: mpsc::Receiver<()>,
) {
    let mut next = Instant::now();
    loop {
        if let Some(rules) = new_rules.try_iter().last() {
            alerts.set_rules(rules);
        }
        let began = Instant::now();
        let mut sample = collector.sample();
        sample.node_id = state.node_id.clone();
        sample.node_name = state.node_name.clone();
        sample.time_unix_ms = unix_now_ms();
        let transitions = alerts.evaluate(&sample, sample.time_unix_ms);
        for transition in transitions {
            if let Err(e) = state.journal.append(transition.to_draft()) {
                tracing::warn!(error = %e, "cannot record an alert event");
            }
        }
        let history_bytes = match state.history.lock() {
            Ok(mut history) => {
                history.push(sample.time_unix_ms, &sample);
                history.memory_bytes() as u64
            }
            Err(_) => 0,
        };
        if let Ok(mut stats) = state.stats.lock() {
            stats.last_collect_seconds = began.elapsed().as_secs_f64();
            stats.alerts_firing = alerts.firing().len() as u64;
            stats.history_bytes = history_bytes;
            stats.processes = Some(collector.process_counts());
        }
        state.latest.send_replace(Arc::new(sample));

        next += interval;
        let now = Instant::now();
        if next < now {
            next = now + interval;
        }
        match stopped.recv_timeout(next - now) {
            Err(RecvTimeoutError::Timeout) => continue,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
