//! Fair shares of a limited resource (TFTP transfers, HTTP connections) between client
//! addresses: who gets in when a new one arrives.
//!
//! Two limits: per source address and in total. An arrival within both is admitted. One that
//! would exceed a limit takes the place of the stalest occupant within that limit (the one
//! idle longest: no ACK, no byte read or written), if that one has been idle for at least
//! [`ShareLimits::evict_after`]; otherwise it is refused. At the per-source limit only the
//! source's own occupants are candidates, so one host can only ever displace itself; at the
//! total limit anyone's are. A client that makes progress is never displaced by one that
//! arrives, so a flood of requests that never answer (RFC 2349 `timeout=255` and no ACK, or
//! idle connections) cannot keep a valid client out, and cannot end one that is being served.
//!
//! This module owns the decision only; the daemon keeps the occupants, their idle times and
//! the means to end one (`appliance::fair_share`).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// The limits of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareLimits {
    /// Occupants one source address may hold at once.
    pub per_source: usize,
    /// Occupants in total.
    pub total: usize,
    /// How long an occupant must have been idle before an arrival may take its place.
    pub evict_after: Duration,
}

/// One current occupant, as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupant<Id> {
    pub id: Id,
    pub source: IpAddr,
    /// Time since its last progress.
    pub idle: Duration,
}

/// What happens to an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission<Id> {
    /// Within both limits.
    Admit,
    /// Admitted in place of this occupant, which is ended.
    Evict(Occupant<Id>),
    /// Not admitted: the limit it hit, every candidate still making progress.
    Refuse(Refusal),
}

/// Which limit refused an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source holds `per_source` occupants, none of them stale.
    SourceFull,
    /// `total` occupants, none of them stale.
    Full,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::SourceFull => "the source's share is full and none of its own is stale",
            Refusal::Full => "every slot is taken and none is stale",
        })
    }
}

/// Decides about an arrival from `source`, which holds `from_source` of the `total` current
/// `occupants` (listed only when a limit is reached).
pub fn admit<Id: Copy, I: IntoIterator<Item = Occupant<Id>>>(
    limits: &ShareLimits,
    source: IpAddr,
    from_source: usize,
    total: usize,
    occupants: impl FnOnce() -> I,
) -> Admission<Id> {
    let (own_only, refusal) = if from_source >= limits.per_source {
        (true, Refusal::SourceFull)
    } else if total >= limits.total {
        (false, Refusal::Full)
    } else {
        return Admission::Admit;
    };
    let stalest = occupants()
        .into_iter()
        .filter(|o| (!own_only || o.source == source) && o.idle >= limits.evict_after)
        .max_by_key(|o| o.idle);
    match stalest {
        Some(o) => Admission::Evict(o),
        None => Admission::Refuse(refusal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ShareLimits = ShareLimits { per_source: 2, total: 3, evict_after: Duration::from_secs(2) };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 77, 0, last])
    }

    fn occ(id: u32, source: u8, idle_secs: u64) -> Occupant<u32> {
        Occupant { id, source: ip(source), idle: Duration::from_secs(idle_secs) }
    }

    fn decide(source: u8, occupants: &[Occupant<u32>]) -> Admission<u32> {
        let from_source = occupants.iter().filter(|o| o.source == ip(source)).count();
        admit(&LIMITS, ip(source), from_source, occupants.len(), || occupants.to_vec())
    }

    #[test]
    fn within_both_limits_is_admitted_without_looking_at_anyone() {
        let admitted = admit::<u32, Vec<_>>(&LIMITS, ip(1), 1, 2, || panic!("occupants listed"));
        assert_eq!(admitted, Admission::Admit);
    }

    #[test]
    fn a_full_source_displaces_only_its_own_stalest_idle_occupant() {
        // Source 1 holds two; source 2's is the stalest of all but not source 1's to take.
        let now = [occ(1, 1, 3), occ(2, 1, 5)];
        assert_eq!(decide(1, &now), Admission::Evict(occ(2, 1, 5)));
        let with_other = [occ(1, 1, 3), occ(2, 1, 5), occ(3, 2, 60)];
        assert_eq!(decide(1, &with_other), Admission::Evict(occ(2, 1, 5)));
    }

    #[test]
    fn a_full_source_whose_occupants_progress_is_refused() {
        assert_eq!(decide(1, &[occ(1, 1, 0), occ(2, 1, 1)]), Admission::Refuse(Refusal::SourceFull));
    }

    #[test]
    fn when_all_slots_are_taken_the_stalest_of_anyone_goes() {
        let now = [occ(1, 1, 9), occ(2, 2, 30), occ(3, 3, 1)];
        assert_eq!(decide(4, &now), Admission::Evict(occ(2, 2, 30)));
    }

    #[test]
    fn a_new_client_never_displaces_ones_making_progress() {
        let busy = [occ(1, 1, 0), occ(2, 2, 1), occ(3, 3, 1)];
        assert_eq!(decide(4, &busy), Admission::Refuse(Refusal::Full));
    }

    #[test]
    fn zero_limits_admit_no_one() {
        let closed = ShareLimits { per_source: 0, ..LIMITS };
        assert_eq!(admit::<u32, Vec<_>>(&closed, ip(1), 0, 0, Vec::new), Admission::Refuse(Refusal::SourceFull));
    }
}
