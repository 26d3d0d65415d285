//! Backend port allocation: each instance gets one port per named port from the agent's
//! range, kept across its restarts, and never one that another process already holds.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;

/// Hands out ports from a range, remembering which are in use by instances.
#[derive(Debug)]
pub struct PortAllocator {
    range: RangeInclusive<u16>,
    used: BTreeSet<u16>,
    next: u16,
}

impl PortAllocator {
    /// An allocator over `range`.
    pub fn new(range: RangeInclusive<u16>) -> PortAllocator {
        let next = *range.start();
        PortAllocator {
            range,
            used: BTreeSet::new(),
            next,
        }
    }

    /// Marks ports as taken (adopted instances keep theirs).
    pub fn reserve(&mut self, port: u16) {
        self.used.insert(port);
    }

    /// Gives back a port.
    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }

    /// A free port: not used by an instance and bindable right now. Scans round-robin from
    /// the last allocation so a just-released port is not handed out again at once.
    pub fn allocate(&mut self) -> Option<u16> {
        self.allocate_where(bindable)
    }

    /// `allocate` with the "is it free on the host" check given, so the rotation and
    /// reservation logic can be tested without depending on what else holds ports.
    fn allocate_where(&mut self, free: impl Fn(u16) -> bool) -> Option<u16> {
        let (start, end) = (*self.range.start(), *self.range.end());
        let size = (end - start) as u32 + 1;
        for _ in 0..size {
            let port = self.next;
            self.next = if port >= end { start } else { port + 1 };
            if !self.used.contains(&port) && free(port) {
                self.used.insert(port);
                return Some(port);
            }
        }
        None
    }
}

/// Whether nothing listens on `port` (any address).
fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// Parses a port range "20000-29999".
pub fn parse_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (a, b) = text.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && a <= b).then_some(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_ports_in_use_and_reserved_and_rotates() {
        let mut ports = PortAllocator::new(20000..=20003);
        ports.reserve(20001);
        let in_use = |p: u16| p != 20000;
        assert_eq!(ports.allocate_where(in_use), Some(20002));
        assert_eq!(ports.allocate_where(|_| true), Some(20003));
        assert_eq!(ports.allocate_where(|_| true), Some(20000), "wraps around");
        assert_eq!(ports.allocate_where(|_| true), None, "all used or reserved");
        ports.release(20002);
        assert_eq!(ports.allocate_where(|_| true), Some(20002));
    }

    #[test]
    fn a_port_held_by_another_socket_is_not_bindable() {
        let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let busy = held.local_addr().unwrap().port();
        assert!(!bindable(busy));
        let mut ports = PortAllocator::new(busy..=busy);
        assert_eq!(ports.allocate(), None);
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("20000-29999"), Some(20000..=29999));
        assert_eq!(parse_range("5-1"), None);
        assert_eq!(parse_range("x-1"), None);
    }
}
