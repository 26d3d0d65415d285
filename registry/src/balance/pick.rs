//! The picker algorithms: small pure functions over a snapshot of the eligible endpoints,
//! so each one can be tested without sockets by feeding it a fixed random generator.

use crate::table::Algorithm;

/// What a picker knows about one eligible endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    /// Connections open or being opened to it.
    pub active: u64,
    /// Peak-EWMA of its connect latency in milliseconds (0 when not yet measured).
    pub latency_ms: f64,
}

/// Keeps an unmeasured (0 ms) endpoint comparable: the cost then follows its load.
const LATENCY_FLOOR_MS: f64 = 0.001;

impl Candidate {
    /// Linkerd's load estimate: latency penalised by the connections it already carries.
    fn cost(&self) -> f64 {
        (self.latency_ms + LATENCY_FLOOR_MS) * (self.active as f64 + 1.0)
    }
}

/// Index of the chosen candidate, `None` when there is none. `turn` is the service's
/// round-robin counter (also used to spread ties); `rng` drives the random choices.
pub(crate) fn pick(
    algorithm: Algorithm,
    candidates: &[Candidate],
    turn: usize,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    match algorithm {
        Algorithm::RoundRobin => Some(turn % candidates.len()),
        Algorithm::LeastConn => least_conn(candidates, turn),
        Algorithm::P2cEwma | Algorithm::Unspecified => Some(p2c(candidates, rng)),
    }
}

/// Fewest active connections; ties go round-robin so idle endpoints share the load.
fn least_conn(candidates: &[Candidate], turn: usize) -> Option<usize> {
    let min = candidates.iter().map(|c| c.active).min()?;
    let tied: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].active == min)
        .collect();
    tied.get(turn % tied.len()).copied()
}

/// Power of two random choices: the cheaper of two distinct random candidates.
fn p2c(candidates: &[Candidate], rng: &mut fastrand::Rng) -> usize {
    let n = candidates.len();
    if n == 1 {
        return 0;
    }
    let a = rng.usize(..n);
    let b = (a + 1 + rng.usize(..n - 1)) % n;
    if candidates[b].cost() < candidates[a].cost() {
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
            latency_ms,
        }
    }

    #[test]
    fn empty_gives_none() {
        let mut rng = fastrand::Rng::with_seed(1);
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::LeastConn,
            Algorithm::P2cEwma,
        ] {
            assert_eq!(pick(algorithm, &[], 0, &mut rng), None);
        }
    }

    #[test]
    fn round_robin_cycles() {
        let mut rng = fastrand::Rng::with_seed(1);
        let c = [idle(0.0); 3];
        let picks: Vec<_> = (0..6)
            .filter_map(|t| pick(Algorithm::RoundRobin, &c, t, &mut rng))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_conn_takes_the_idle_one_and_spreads_ties() {
        let mut rng = fastrand::Rng::with_seed(1);
        let c = [
            Candidate {
                active: 4,
                latency_ms: 0.0,
            },
            Candidate {
                active: 0,
                latency_ms: 9.0,
            },
            Candidate {
                active: 2,
                latency_ms: 0.0,
            },
        ];
        for turn in 0..5 {
            assert_eq!(pick(Algorithm::LeastConn, &c, turn, &mut rng), Some(1));
        }
        let tied = [Candidate {
            active: 1,
            latency_ms: 0.0,
        }; 2];
        assert_eq!(pick(Algorithm::LeastConn, &tied, 0, &mut rng), Some(0));
        assert_eq!(pick(Algorithm::LeastConn, &tied, 1, &mut rng), Some(1));
    }

    #[test]
    fn p2c_prefers_the_fast_endpoint() {
        let mut rng = fastrand::Rng::with_seed(7);
        let c = [idle(50.0), idle(0.2), idle(50.0)];
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[pick(Algorithm::P2cEwma, &c, 0, &mut rng).unwrap()] += 1;
        }
        // The fast one wins every draw it is part of: 2 of 3 pairs.
        assert!(counts[1] > 150, "{counts:?}");
        // The slow ones only win against each other.
        assert!(counts[0] + counts[2] < 150, "{counts:?}");
    }

    #[test]
    fn p2c_penalises_load() {
        let mut rng = fastrand::Rng::with_seed(3);
        let c = [
            Candidate {
                active: 100,
                latency_ms: 1.0,
            },
            Candidate {
                active: 0,
                latency_ms: 10.0,
            },
        ];
        for _ in 0..20 {
            assert_eq!(pick(Algorithm::P2cEwma, &c, 0, &mut rng), Some(1));
        }
    }

    #[test]
    fn p2c_draws_two_distinct() {
        let mut rng = fastrand::Rng::with_seed(11);
        let c = [idle(1.0), idle(2.0)];
        // With two candidates both are always compared, so the cheaper always wins.
        for _ in 0..50 {
            assert_eq!(pick(Algorithm::P2cEwma, &c, 0, &mut rng), Some(0));
        }
    }
}
