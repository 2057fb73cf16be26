//! Which upstream a request goes to: among the available ones of the lowest priority, spread by
//! weight. Pure: the caller says what is available, and which turn this is.

/// One upstream as a choice sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Candidate {
    pub(super) priority: u32,
    pub(super) weight: u32,
    /// When its cooldown ends, in the set's milliseconds; 0 or past means available now.
    pub(super) rests_until: u64,
}

/// The upstream for `turn`, skipping those in `tried` (a bit per index). A first attempt goes
/// to the available ones of the lowest priority, spread by weight: turn `n` takes the slot
/// `n mod total weight`, so that any run of as many turns as the total weight gives each its
/// exact share. When none is available, a first attempt goes to the one back soonest, since the
/// upstream's own answer says more than the proxy's guess; a failover goes only to an available
/// one.
pub(super) fn pick(
    candidates: &[Candidate],
    tried: u64,
    turn: u64,
    now: u64,
    first: bool,
) -> Option<usize> {
    let untried = || {
        candidates
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i >= 64 || tried & (1 << i) == 0)
    };
    let available = || untried().filter(|(_, c)| c.rests_until <= now);
    let Some(priority) = available().map(|(_, c)| c.priority).min() else {
        return if first {
            untried().min_by_key(|(_, c)| c.rests_until).map(|(i, _)| i)
        } else {
            None
        };
    };
    let group = || available().filter(move |(_, c)| c.priority == priority);
    let total: u64 = group().map(|(_, c)| u64::from(c.weight)).sum();
    let mut slot = turn % total.max(1);
    for (i, c) in group() {
        let weight = u64::from(c.weight);
        if slot < weight {
            return Some(i);
        }
        slot -= weight;
    }
    group().next().map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(priority: u32, weight: u32, rests_until: u64) -> Candidate {
        Candidate {
            priority,
            weight,
            rests_until,
        }
    }

    #[test]
    fn weights_give_exact_shares_over_each_run_of_turns() {
        let set = [c(0, 3, 0), c(0, 1, 0), c(1, 5, 0)];
        let mut counts = [0; 3];
        for turn in 0..400 {
            counts[pick(&set, 0, turn, 10, true).unwrap()] += 1;
        }
        assert_eq!(counts, [300, 100, 0]);
    }

    #[test]
    fn a_resting_or_tried_upstream_is_skipped_and_the_next_priority_serves() {
        let set = [c(0, 1, 100), c(0, 1, 0), c(1, 1, 0)];
        assert_eq!(pick(&set, 0, 0, 10, true), Some(1));
        assert_eq!(pick(&set, 0b10, 0, 10, false), Some(2));
        assert_eq!(pick(&set, 0b110, 0, 10, false), None);
        // Every one resting: a first attempt goes to the one back soonest.
        let resting = [c(0, 1, 500), c(1, 1, 200)];
        assert_eq!(pick(&resting, 0, 0, 10, true), Some(1));
        assert_eq!(pick(&resting, 0b10, 0, 10, false), None);
    }
}
