//! Limits per source address (connections at once, new connections per second) and on failed
//! enrolment attempts per address and per account, so that one source cannot crowd out the
//! others or guess enrolment codes.
//!
//! A connection is counted from the moment the endpoint hands it over until its task ends; a
//! new one spends a token from its address's bucket, which refills at the configured rate. A
//! failed enrolment (a wrong, spent or expired code) is remembered for the window; past the
//! limit, enrolments from that address, or for that account, are refused until the oldest
//! failure is a window old, without the code being looked at.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::config::LimitsConfig;

/// Why a new connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SourceRefusal {
    /// The address holds as many connections as it may.
    #[error("{0} connections from this address already")]
    Connections(u32),
    /// The address opened connections faster than its rate.
    #[error("more than {0} new connections per second from this address")]
    Rate(u32),
}

/// What one address holds and has spent.
struct Source {
    connections: u32,
    tokens: f64,
    refilled: Instant,
    failed_enrolments: VecDeque<Instant>,
}

#[derive(Default)]
struct State {
    addresses: HashMap<IpAddr, Source>,
    accounts: HashMap<String, VecDeque<Instant>>,
    admitted: u64,
}

/// The limits per source, shared by the accept loop and the sessions.
pub struct Sources {
    limits: arc_swap::ArcSwap<LimitsConfig>,
    state: Mutex<State>,
}

impl Sources {
    /// Limits as `limits` sets them.
    pub fn new(limits: LimitsConfig) -> Self {
        Self { limits: arc_swap::ArcSwap::from_pointee(limits), state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New limits (a reload); what addresses hold and have spent is kept.
    pub fn set_limits(&self, limits: LimitsConfig) {
        self.limits.store(Arc::new(limits));
    }

    /// Takes a new connection from `ip` if its limits allow: the guard counts it until
    /// dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<SourceGuard, SourceRefusal> {
        let limits = self.limits.load();
        let burst = f64::from(limits.connection_burst_per_address.max(1));
        let mut state = self.state();
        state.admitted += 1;
        if state.admitted.is_multiple_of(4_096) {
            self.sweep(&mut state, now);
        }
        let source = state.addresses.entry(ip).or_insert_with(|| Source {
            connections: 0,
            tokens: burst,
            refilled: now,
            failed_enrolments: VecDeque::new(),
        });
        let cap = limits.connections_per_address;
        if cap > 0 && source.connections >= cap {
            return Err(SourceRefusal::Connections(cap));
        }
        let rate = limits.connections_per_second_per_address;
        if rate > 0 {
            let elapsed = now.saturating_duration_since(source.refilled).as_secs_f64();
            source.tokens = (source.tokens + elapsed * f64::from(rate)).min(burst);
            source.refilled = now;
            if source.tokens < 1.0 {
                return Err(SourceRefusal::Rate(rate));
            }
            source.tokens -= 1.0;
        }
        source.connections += 1;
        Ok(SourceGuard { sources: self.clone(), ip })
    }

    /// Drops what no longer limits anyone: addresses with no connection, a full bucket and no
    /// recent failure; accounts with no recent failure.
    fn sweep(&self, state: &mut State, now: Instant) {
        let window = self.window();
        let rate = f64::from(self.limits.load().connections_per_second_per_address.max(1));
        let burst = f64::from(self.limits.load().connection_burst_per_address.max(1));
        state.addresses.retain(|_, source| {
            forget_before(&mut source.failed_enrolments, now, window);
            let refilled = source.tokens
                + now.saturating_duration_since(source.refilled).as_secs_f64() * rate
                >= burst;
            source.connections > 0 || !refilled || !source.failed_enrolments.is_empty()
        });
        state.accounts.retain(|_, failures| {
            forget_before(failures, now, window);
            !failures.is_empty()
        });
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.limits.load().enrolment_failure_window_secs)
    }

    /// How long enrolments from `ip` or for `account` must wait, if either had too many
    /// failures within the window.
    pub fn enrolment_wait(&self, ip: IpAddr, account: &str, now: Instant) -> Option<Duration> {
        let window = self.window();
        let mut state = self.state();
        let mut wait = None;
        if let Some(source) = state.addresses.get_mut(&ip) {
            let limit = self.limits.load().enrolment_failures_per_address;
            wait = wait_for(&mut source.failed_enrolments, limit, now, window);
        }
        if let Some(failures) = state.accounts.get_mut(account) {
            let limit = self.limits.load().enrolment_failures_per_account;
            wait = wait.max(wait_for(failures, limit, now, window));
        }
        wait
    }

    /// Records a failed enrolment from `ip` for `account`.
    pub fn enrolment_failed(&self, ip: IpAddr, account: &str, now: Instant) {
        let mut state = self.state();
        if let Some(source) = state.addresses.get_mut(&ip) {
            source.failed_enrolments.push_back(now);
        }
        state.accounts.entry(account.to_string()).or_default().push_back(now);
    }

    /// Connections from `ip` now.
    pub fn connections(&self, ip: IpAddr) -> u32 {
        self.state().addresses.get(&ip).map_or(0, |s| s.connections)
    }
}

/// Forgets failures older than the window.
fn forget_before(failures: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while failures.front().is_some_and(|&t| now.saturating_duration_since(t) >= window) {
        failures.pop_front();
    }
}

/// With `limit` failures or more within the window, the time until the oldest is a window old.
fn wait_for(
    failures: &mut VecDeque<Instant>,
    limit: u32,
    now: Instant,
    window: Duration,
) -> Option<Duration> {
    forget_before(failures, now, window);
    if limit == 0 || failures.len() < limit as usize {
        return None;
    }
    let oldest = *failures.front()?;
    Some(window.saturating_sub(now.saturating_duration_since(oldest)))
}

/// Counts one connection of an address until dropped.
pub struct SourceGuard {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl SourceGuard {
    /// The address counted.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut state = self.sources.state();
        if let Some(source) = state.addresses.get_mut(&self.ip) {
            source.connections = source.connections.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            connections_per_address: 3,
            connections_per_second_per_address: 10,
            connection_burst_per_address: 5,
            enrolment_failures_per_address: 4,
            enrolment_failures_per_account: 2,
            enrolment_failure_window_secs: 600,
            ..LimitsConfig::default()
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn an_address_holds_at_most_its_cap_of_connections_and_a_closed_one_frees_a_place() {
        let sources = Arc::new(Sources::new(limits()));
        let now = Instant::now();
        let mut held: Vec<_> = (0..3).map(|_| sources.admit(A, now).unwrap()).collect();
        assert_eq!(sources.admit(A, now).err(), Some(SourceRefusal::Connections(3)));
        assert!(sources.admit(B, now).is_ok(), "another address is not affected");
        held.pop();
        assert_eq!(sources.connections(A), 2);
        assert!(sources.admit(A, now).is_ok());
    }

    #[test]
    fn new_connections_beyond_the_burst_wait_for_the_bucket_to_refill() {
        let sources =
            Arc::new(Sources::new(LimitsConfig { connections_per_address: 0, ..limits() }));
        let now = Instant::now();
        for _ in 0..5 {
            drop(sources.admit(A, now).unwrap());
        }
        assert_eq!(sources.admit(A, now).err(), Some(SourceRefusal::Rate(10)));
        // Dropping every connection does not refill the bucket; time does, at 10 a second.
        assert!(sources.admit(A, now + Duration::from_millis(50)).is_err());
        assert!(sources.admit(A, now + Duration::from_millis(120)).is_ok());
        assert!(sources.admit(B, now).is_ok());
    }

    #[test]
    fn failed_enrolments_block_the_account_and_the_address_for_the_rest_of_the_window() {
        let sources = Arc::new(Sources::new(limits()));
        let now = Instant::now();
        let _guard = sources.admit(A, now).unwrap();
        assert_eq!(sources.enrolment_wait(A, "alice@example.org", now), None);
        sources.enrolment_failed(A, "alice@example.org", now);
        sources.enrolment_failed(A, "alice@example.org", now + Duration::from_secs(10));
        // Two failures for alice: her account waits until the first is 600 s old.
        let wait = sources.enrolment_wait(B, "alice@example.org", now + Duration::from_secs(20));
        assert_eq!(wait, Some(Duration::from_secs(580)));
        // The address has two of its four; bob's account none.
        assert_eq!(sources.enrolment_wait(A, "bob@example.org", now), None);
        sources.enrolment_failed(A, "bob@example.org", now);
        sources.enrolment_failed(A, "carol@example.org", now);
        assert!(sources.enrolment_wait(A, "dave@example.org", now).is_some());
        assert_eq!(sources.enrolment_wait(B, "dave@example.org", now), None);
        let later = now + Duration::from_secs(611);
        assert_eq!(sources.enrolment_wait(A, "alice@example.org", later), None);
    }
}
