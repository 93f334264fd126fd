//! The two bounded maps behind the store: the revoke cool-down list (V-9, R-8.4) and the
//! consecutive-failure tracker (E-2, E-7, R-8.2). Both live inside the store's state and
//! are only touched under its lock.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use crate::Error;

/// DIDs and peer IDs refused new sessions until a deadline.
///
/// Bounded: each of the two maps holds at most `capacity` automatic entries. When a map is
/// full, expired entries are dropped first; if it is still full, the automatic entry whose
/// cool-down ends soonest is dropped. A manual revoke's cool-down is never dropped to make
/// room (issue 17: cheap invalidations must not end an operator's revoke early); operator
/// actions are few, so they may exceed the bound.
#[derive(Debug)]
pub(crate) struct Cooldowns {
    capacity: usize,
    by_did: HashMap<String, Cool>,
    by_peer: HashMap<String, Cool>,
}

#[derive(Debug, Clone, Copy)]
struct Cool {
    until: SystemTime,
    manual: bool,
}

impl Cooldowns {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            by_did: HashMap::new(),
            by_peer: HashMap::new(),
        }
    }

    /// Refuses `did` and, if given, `peer_id` until `until`. An existing, later deadline is
    /// kept.
    pub(crate) fn add(
        &mut self,
        did: &str,
        peer_id: Option<&str>,
        until: SystemTime,
        now: SystemTime,
    ) {
        self.add_entry(did, peer_id, until, now, false);
    }

    /// Refuses `peer_id` alone until `until` (an unauthenticated session's automatic
    /// invalidation: its DID was only claimed). An existing, later deadline is kept.
    pub(crate) fn add_peer(&mut self, peer_id: &str, until: SystemTime, now: SystemTime) {
        let c = Cool {
            until,
            manual: false,
        };
        insert_bounded(&mut self.by_peer, self.capacity, peer_id, c, now);
    }

    /// As [`add`](Self::add), for an operator's revoke: never evicted to make room.
    pub(crate) fn add_manual(
        &mut self,
        did: &str,
        peer_id: Option<&str>,
        until: SystemTime,
        now: SystemTime,
    ) {
        self.add_entry(did, peer_id, until, now, true);
    }

    fn add_entry(
        &mut self,
        did: &str,
        peer_id: Option<&str>,
        until: SystemTime,
        now: SystemTime,
        manual: bool,
    ) {
        let c = Cool { until, manual };
        insert_bounded(&mut self.by_did, self.capacity, did, c, now);
        if let Some(p) = peer_id {
            insert_bounded(&mut self.by_peer, self.capacity, p, c, now);
        }
    }

    /// `Err(Cooldown)` while `did` or `peer_id` is refused (`now < until`). Entries that have
    /// ended are removed on the way.
    pub(crate) fn check(&mut self, did: &str, peer_id: &str, now: SystemTime) -> Result<(), Error> {
        let a = active(&mut self.by_did, did, now);
        let b = active(&mut self.by_peer, peer_id, now);
        match (a, b) {
            (None, None) => Ok(()),
            (x, y) => Err(Error::Cooldown {
                until: x.into_iter().chain(y).max().unwrap_or(now),
            }),
        }
    }

    /// Drops every cool-down that has ended.
    pub(crate) fn purge(&mut self, now: SystemTime) {
        self.by_did.retain(|_, c| now < c.until);
        self.by_peer.retain(|_, c| now < c.until);
    }

    pub(crate) fn len(&self) -> (usize, usize) {
        (self.by_did.len(), self.by_peer.len())
    }
}

fn active(map: &mut HashMap<String, Cool>, key: &str, now: SystemTime) -> Option<SystemTime> {
    match map.get(key) {
        Some(c) if now < c.until => Some(c.until),
        Some(_) => {
            map.remove(key);
            None
        }
        None => None,
    }
}

fn insert_bounded(
    map: &mut HashMap<String, Cool>,
    capacity: usize,
    key: &str,
    new: Cool,
    now: SystemTime,
) {
    if let Some(existing) = map.get_mut(key) {
        if new.until > existing.until {
            existing.until = new.until;
        }
        existing.manual |= new.manual;
        return;
    }
    if map.len() >= capacity {
        map.retain(|_, c| now < c.until);
    }
    if map.len() >= capacity {
        let soonest = map
            .iter()
            .filter(|(_, c)| !c.manual)
            .min_by_key(|(_, c)| c.until)
            .map(|(k, _)| k.clone());
        match soonest {
            Some(k) => {
                map.remove(&k);
            }
            // Only operator revokes are held: an automatic newcomer is not recorded rather
            // than ending one of them early.
            None if !new.manual => return,
            None => {}
        }
    }
    map.insert(key.to_owned(), new);
}

/// Consecutive failures per DID, for the session that DID has now.
///
/// Each counter remembers the internal id of the session it counts against, so failures of
/// an earlier session never count against a newer one. Bounded to `capacity` DIDs; when full,
/// the least recently updated counter is evicted (E-7).
#[derive(Debug)]
pub(crate) struct FailureTracker {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, Counter>,
    /// Update tick → DID, oldest first.
    order: BTreeMap<u64, String>,
}

#[derive(Debug)]
struct Counter {
    session: u64,
    count: u32,
    tick: u64,
}

impl FailureTracker {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// Adds one failure for `did` against session `session` and returns the new count.
    pub(crate) fn increment(&mut self, did: &str, session: u64) -> u32 {
        self.tick += 1;
        let tick = self.tick;
        if let Some(c) = self.entries.get_mut(did) {
            self.order.remove(&c.tick);
            if c.session != session {
                c.session = session;
                c.count = 0;
            }
            c.count = c.count.saturating_add(1);
            c.tick = tick;
            self.order.insert(tick, did.to_owned());
            return c.count;
        }
        if self.entries.len() >= self.capacity
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(
            did.to_owned(),
            Counter {
                session,
                count: 1,
                tick,
            },
        );
        self.order.insert(tick, did.to_owned());
        1
    }

    /// The current count for `did` against `session` (0 if none, or if it was for another
    /// session).
    pub(crate) fn count(&self, did: &str, session: u64) -> u32 {
        self.entries
            .get(did)
            .filter(|c| c.session == session)
            .map_or(0, |c| c.count)
    }

    /// Deletes the counter of `did`.
    pub(crate) fn forget(&mut self, did: &str) {
        if let Some(c) = self.entries.remove(did) {
            self.order.remove(&c.tick);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn cooldown_refuses_until_the_deadline_by_did_and_by_peer() {
        let mut c = Cooldowns::new(10);
        c.add("did:a", Some("peer-a"), t(400), t(100));
        assert_eq!(
            c.check("did:a", "other", t(399)),
            Err(Error::Cooldown { until: t(400) })
        );
        assert_eq!(
            c.check("did:b", "peer-a", t(399)),
            Err(Error::Cooldown { until: t(400) })
        );
        assert_eq!(c.check("did:b", "peer-b", t(399)), Ok(()));
        assert_eq!(c.check("did:a", "peer-a", t(400)), Ok(()));
        assert_eq!(c.len(), (0, 0), "ended entries are removed when checked");
    }

    #[test]
    fn cooldown_keeps_the_later_deadline() {
        let mut c = Cooldowns::new(10);
        c.add("did:a", None, t(500), t(0));
        c.add("did:a", None, t(300), t(0));
        assert!(c.check("did:a", "p", t(450)).is_err());
    }

    #[test]
    fn cooldown_is_bounded() {
        let mut c = Cooldowns::new(3);
        for i in 0..3 {
            c.add(&format!("did:{i}"), None, t(1000 + i), t(0));
        }
        c.add("did:new", None, t(2000), t(0));
        assert_eq!(c.len().0, 3);
        // The entry ending soonest (did:0) made room.
        assert!(c.check("did:0", "p", t(1)).is_ok());
        for d in ["did:1", "did:2", "did:new"] {
            assert!(c.check(d, "p", t(1)).is_err(), "{d}");
        }
        // Ended entries are dropped before any live one.
        let mut c = Cooldowns::new(2);
        c.add("did:old", None, t(10), t(0));
        c.add("did:live", None, t(1000), t(0));
        c.add("did:next", None, t(900), t(20));
        assert!(c.check("did:live", "p", t(21)).is_err());
        assert!(c.check("did:next", "p", t(21)).is_err());
    }

    #[test]
    fn tracker_counts_per_session_and_evicts_least_recently_updated() {
        let mut f = FailureTracker::new(2);
        assert_eq!(f.increment("a", 1), 1);
        assert_eq!(f.increment("a", 1), 2);
        assert_eq!(f.increment("b", 7), 1);
        // A new session for "a" starts from zero.
        assert_eq!(f.increment("a", 2), 1);
        assert_eq!(f.count("a", 1), 0);
        assert_eq!(f.count("a", 2), 1);
        // "b" is now the least recently updated: adding "c" evicts it.
        assert_eq!(f.increment("c", 3), 1);
        assert_eq!(f.len(), 2);
        assert_eq!(f.count("b", 7), 0);
        assert_eq!(f.count("a", 2), 1);
        f.forget("a");
        assert_eq!(f.len(), 1);
        assert_eq!(f.order.len(), 1);
    }

    #[test]
    fn tracker_stays_bounded_under_many_dids() {
        let mut f = FailureTracker::new(100);
        for i in 0..10_000u64 {
            f.increment(&format!("did:{i}"), i);
            assert!(f.len() <= 100);
            assert_eq!(f.len(), f.order.len());
        }
        // The most recent 100 survive.
        assert_eq!(f.count("did:9999", 9999), 1);
        assert_eq!(f.count("did:9899", 9899), 0);
    }
}
