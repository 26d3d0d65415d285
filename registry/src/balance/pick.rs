//! The picker algorithms: small pure functions over a snapshot of the eligible endpoints,
//! so each one can be tested without sockets by feeding it a fixed random generator.
//!
//! Every algorithm honours the slow-start weight (`slow_start.rs`): round_robin is smooth
//! weighted round robin (nginx), least_conn compares `(active + 1) / weight` (HAProxy's
//! leastconn with weights), p2c_ewma divides its cost by the weight.

use crate::table::Algorithm;

/// What a picker knows about one eligible endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    /// Connections open or being opened to it.
    pub active: u64,
    /// Peak-EWMA of its connect latency in milliseconds; `None` while unmeasured.
    pub latency_ms: Option<f64>,
    /// Slow-start weight in (0, 1].
    pub weight: f64,
}

/// Connect latencies within a few milliseconds of each other are noise on a LAN: a loopback
/// connect takes 20–100 µs, and on a busy host the balancer's own scheduling adds milliseconds
/// to some samples. Adding this keeps p2c_ewma from reading that noise as a 2:1 difference
/// between equal instances (with 1 ms it still split 62/38 under load): between instances
/// that are equally fast to connect it decides by load, and latency decides when one is
/// milliseconds slower (another site, a saturated host, or penalised by failed connects).
const LATENCY_FLOOR_MS: f64 = 5.0;

impl Candidate {
    /// Linkerd's load estimate: latency penalised by the connections it already carries,
    /// divided by the slow-start weight. `typical_ms` stands in for an unmeasured latency.
    fn cost(&self, typical_ms: f64) -> f64 {
        (self.latency_ms.unwrap_or(typical_ms) + LATENCY_FLOOR_MS) * (self.active as f64 + 1.0)
            / self.weight
    }

    /// least_conn's score: the fewest connections per unit of weight wins.
    fn load(&self) -> f64 {
        (self.active as f64 + 1.0) / self.weight
    }
}

/// Index of the chosen candidate, `None` when there is none. `credits` holds each
/// candidate's smooth round-robin credit (kept by the caller between picks, updated here);
/// `turn` is the service's counter (spreads least_conn's ties); `rng` drives p2c's draws.
pub(crate) fn pick(
    algorithm: Algorithm,
    candidates: &[Candidate],
    credits: &mut [f64],
    turn: usize,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    if candidates.is_empty() || credits.len() != candidates.len() {
        return None;
    }
    match algorithm {
        Algorithm::RoundRobin => Some(smooth_round_robin(candidates, credits)),
        Algorithm::LeastConn => least_conn(candidates, turn),
        Algorithm::P2cEwma | Algorithm::Unspecified => Some(p2c(candidates, rng)),
    }
}

/// nginx's smooth weighted round robin: every candidate earns its weight, the richest is
/// chosen and pays the total. Equal weights give a plain rotation.
fn smooth_round_robin(candidates: &[Candidate], credits: &mut [f64]) -> usize {
    let total: f64 = candidates.iter().map(|c| c.weight).sum();
    let mut best = 0;
    for (i, c) in candidates.iter().enumerate() {
        credits[i] += c.weight;
        if credits[i] > credits[best] {
            best = i;
        }
    }
    credits[best] -= total;
    best
}

/// Fewest active connections per weight; ties go round-robin so idle endpoints share the load.
fn least_conn(candidates: &[Candidate], turn: usize) -> Option<usize> {
    let min = candidates
        .iter()
        .map(Candidate::load)
        .min_by(f64::total_cmp)?;
    let tied: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].load() <= min)
        .collect();
    tied.get(turn % tied.len()).copied()
}

/// Power of two random choices: the cheaper of two distinct random candidates.
fn p2c(candidates: &[Candidate], rng: &mut fastrand::Rng) -> usize {
    let n = candidates.len();
    if n == 1 {
        return 0;
    }
    let measured: Vec<f64> = candidates.iter().filter_map(|c| c.latency_ms).collect();
    let typical = if measured.is_empty() {
        0.0
    } else {
        measured.iter().sum::<f64>() / measured.len() as f64
    };
    let a = rng.usize(..n);
    let b = (a + 1 + rng.usize(..n - 1)) % n;
    if candidates[b].cost(typical) < candidates[a].cost(typical) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(latency_ms: f64) -> Candidate {
        Candidate {
            active: 0,
            latency_ms: Some(latency_ms),
            weight: 1.0,
        }
    }

    fn busy(active: u64, latency_ms: f64) -> Candidate {
        Candidate {
            active,
            latency_ms: Some(latency_ms),
            weight: 1.0,
        }
    }

    /// Picks `n` times, returning how often each candidate was chosen.
    fn counts(algorithm: Algorithm, c: &[Candidate], n: usize, seed: u64) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut credits = vec![0.0; c.len()];
        let mut counts = vec![0; c.len()];
        for turn in 0..n {
            counts[pick(algorithm, c, &mut credits, turn, &mut rng).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn empty_gives_none() {
        let mut rng = fastrand::Rng::with_seed(1);
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::LeastConn,
            Algorithm::P2cEwma,
        ] {
            assert_eq!(pick(algorithm, &[], &mut [], 0, &mut rng), None);
        }
    }

    #[test]
    fn round_robin_cycles() {
        let mut rng = fastrand::Rng::with_seed(1);
        let c = [idle(0.0); 3];
        let mut credits = [0.0; 3];
        let picks: Vec<_> = (0..6)
            .filter_map(|t| pick(Algorithm::RoundRobin, &c, &mut credits, t, &mut rng))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_follows_the_weights_smoothly() {
        let mut c = [idle(0.0); 3];
        c[1].weight = 0.5;
        assert_eq!(counts(Algorithm::RoundRobin, &c, 250, 1), [100, 50, 100]);
        // Smooth: the light one is never chosen twice in a row.
        let mut rng = fastrand::Rng::with_seed(1);
        let mut credits = [0.0; 3];
        let picks: Vec<_> = (0..50)
            .map(|t| pick(Algorithm::RoundRobin, &c, &mut credits, t, &mut rng).unwrap())
            .collect();
        assert!(picks.windows(2).all(|w| w != [1, 1]), "{picks:?}");
    }

    #[test]
    fn least_conn_takes_the_idle_one_and_spreads_ties() {
        let mut rng = fastrand::Rng::with_seed(1);
        let c = [busy(4, 0.0), busy(0, 9.0), busy(2, 0.0)];
        let mut credits = [0.0; 3];
        for turn in 0..5 {
            assert_eq!(
                pick(Algorithm::LeastConn, &c, &mut credits, turn, &mut rng),
                Some(1)
            );
        }
        let tied = [busy(1, 0.0); 2];
        let mut credits = [0.0; 2];
        assert_eq!(
            pick(Algorithm::LeastConn, &tied, &mut credits, 0, &mut rng),
            Some(0)
        );
        assert_eq!(
            pick(Algorithm::LeastConn, &tied, &mut credits, 1, &mut rng),
            Some(1)
        );
    }

    #[test]
    fn least_conn_gives_a_warming_endpoint_fewer_connections() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut credits = [0.0; 2];
        // 3 connections at full weight cost (3+1)/1 = 4; an idle one at weight 0.2 costs 5.
        let c = [
            busy(3, 0.0),
            Candidate {
                weight: 0.2,
                ..busy(0, 0.0)
            },
        ];
        assert_eq!(
            pick(Algorithm::LeastConn, &c, &mut credits, 0, &mut rng),
            Some(0)
        );
        let c = [
            c[0],
            Candidate {
                weight: 0.5,
                ..c[1]
            },
        ];
        assert_eq!(
            pick(Algorithm::LeastConn, &c, &mut credits, 0, &mut rng),
            Some(1)
        );
    }

    #[test]
    fn p2c_prefers_the_fast_endpoint() {
        let c = [idle(50.0), idle(0.2), idle(50.0)];
        let counts = counts(Algorithm::P2cEwma, &c, 300, 7);
        // The fast one wins every draw it is part of: 2 of 3 pairs.
        assert!(counts[1] > 150, "{counts:?}");
        // The slow ones only win against each other.
        assert!(counts[0] + counts[2] < 150, "{counts:?}");
    }

    #[test]
    fn p2c_penalises_load() {
        let c = [busy(100, 1.0), busy(0, 10.0)];
        assert_eq!(counts(Algorithm::P2cEwma, &c, 20, 3), [0, 20]);
    }

    #[test]
    fn p2c_draws_two_distinct() {
        // With two candidates both are always compared, so the cheaper always wins.
        let c = [idle(1.0), idle(2.0)];
        assert_eq!(counts(Algorithm::P2cEwma, &c, 50, 11), [50, 0]);
    }

    #[test]
    fn p2c_treats_an_unmeasured_endpoint_as_typical_not_as_free() {
        // The old behaviour took an unmeasured endpoint for 0 ms and sent it everything
        // until it carried hundreds of connections: what a returning instance must not get.
        let fresh = Candidate {
            active: 3,
            latency_ms: None,
            weight: 1.0,
        };
        let c = [busy(2, 0.1), fresh];
        assert_eq!(counts(Algorithm::P2cEwma, &c, 20, 5), [20, 0]);
    }

    #[test]
    fn p2c_stays_near_even_when_latencies_differ_only_by_noise() {
        // A closed loop: each pick adds a connection; the load settles where costs meet.
        // 50 µs against 100 µs must not become a 2:1 split.
        let mut c = [busy(0, 0.05), busy(0, 0.1)];
        let mut rng = fastrand::Rng::with_seed(9);
        let mut credits = [0.0; 2];
        for turn in 0..200 {
            let i = pick(Algorithm::P2cEwma, &c, &mut credits, turn, &mut rng).unwrap();
            c[i].active += 1;
        }
        let (a, b) = (c[0].active as f64, c[1].active as f64);
        assert!((a - b).abs() / (a + b) < 0.1, "{a} against {b}");
    }

    #[test]
    fn p2c_gives_a_warming_endpoint_a_small_share() {
        let mut c = [
            busy(0, 1.0),
            Candidate {
                weight: 0.1,
                ..busy(0, 1.0)
            },
        ];
        let mut rng = fastrand::Rng::with_seed(2);
        let mut credits = [0.0; 2];
        for turn in 0..220 {
            let i = pick(Algorithm::P2cEwma, &c, &mut credits, turn, &mut rng).unwrap();
            c[i].active += 1;
        }
        assert!(c[1].active * 5 < c[0].active, "{c:?}");
        assert!(c[1].active > 0, "{c:?}");
    }
}
