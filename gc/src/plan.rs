//! Liveness and the plan of a GC run (DESIGN.md section 9), as pure functions of the
//! segments' bitmaps and the retained points, so that they are tested and measured
//! without a store.
//!
//! For one disk, a block written (or zeroed) in segment `s` is needed only by the first
//! retained point `R ≥ s`, and only if no segment in `(s, R]` writes it again. One pass
//! from newest to oldest keeps `U`, the union of what `(s, R]` wrote, reset at each
//! retained segment: `live(s) = touched(s) - U`.
//!
//! Within a run of segments that are not retained, live sets are disjoint (a live block
//! is written by nobody later in the run), so any of them can be merged into one
//! segment placed at the run's newest seq without changing any retained point.

use std::collections::{BTreeMap, BTreeSet};

use roaring::RoaringBitmap;

/// The live blocks of one segment on one disk, and how many of its blocks are dead.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentLiveness {
    /// The segment.
    pub seq: u64,
    /// Blocks a retained point still reads from it.
    pub live: RoaringBitmap,
    /// Blocks it wrote or zeroed that no retained point reads from it.
    pub dead: u64,
}

/// Liveness of one disk's segments. `touched` is each segment's written ∪ zeroed set,
/// ascending by seq; the result is in the same order.
pub fn disk_liveness(
    touched: &[(u64, RoaringBitmap)],
    retained: &BTreeSet<u64>,
) -> Vec<SegmentLiveness> {
    let mut out = Vec::with_capacity(touched.len());
    let mut later = RoaringBitmap::new();
    let mut above = u64::MAX;
    for (seq, t) in touched.iter().rev() {
        // A retained point between this segment and the next one that touches the
        // disk needs this segment's blocks whatever later ones write: the union
        // starts again there (that point wrote nothing on this disk).
        if seq
            .checked_add(1)
            .is_some_and(|from| retained.range(from..above).next().is_some())
        {
            later.clear();
        }
        above = *seq;
        if retained.contains(seq) {
            later.clone_from(t);
            out.push(SegmentLiveness {
                seq: *seq,
                live: t.clone(),
                dead: 0,
            });
        } else {
            let live = t - &later;
            let dead = t.len() - live.len();
            later |= t;
            out.push(SegmentLiveness {
                seq: *seq,
                live,
                dead,
            });
        }
    }
    out.reverse();
    out
}

/// What the plan needs to know of a segment, over all disks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SegmentFacts {
    /// Seq.
    pub seq: u64,
    /// Whether a retained point.
    pub retained: bool,
    /// Blocks it touches, over all disks.
    pub touched: u64,
    /// Of those, blocks still live.
    pub live: u64,
}

impl SegmentFacts {
    fn dead_fraction(&self) -> f64 {
        if self.touched == 0 {
            return 0.0;
        }
        (self.touched - self.live) as f64 / self.touched as f64
    }
}

/// A run of segments that are not retained, merged into one at the newest's seq.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merge {
    /// Seq of the merged segment: the newest member's.
    pub at: u64,
    /// The segments merged, ascending (the newest is `at`).
    pub members: Vec<u64>,
}

/// The oldest retained point rewritten as one image segment holding every block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The point.
    pub at: u64,
    /// Every segment at or below it, which the image replaces.
    pub members: Vec<u64>,
}

/// What one GC run does to the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Segments no retained point reads: deleted.
    pub deleted: Vec<u64>,
    /// Runs merged.
    pub merges: Vec<Merge>,
    /// Segments no longer points that keep their object (every block still live, or
    /// too large to rewrite for the few dead ones).
    pub demoted: Vec<u64>,
    /// The image made, if any.
    pub image: Option<Image>,
}

impl Plan {
    /// Every segment whose current object the run supersedes.
    pub fn superseded(&self) -> BTreeSet<u64> {
        let mut s: BTreeSet<u64> = self.deleted.iter().copied().collect();
        for m in &self.merges {
            s.extend(&m.members);
        }
        if let Some(i) = &self.image {
            s.extend(&i.members);
        }
        s
    }
}

/// Knobs of the plan.
#[derive(Clone, Debug)]
pub struct PlanRules {
    /// A segment is rewritten for its dead blocks alone once this fraction is dead.
    pub rewrite_dead_fraction: f64,
    /// The oldest retained point becomes an image once this many segments would be
    /// left at or below it.
    pub image_chain: usize,
    /// Make the image whatever the chain's length.
    pub force_image: bool,
}

impl Default for PlanRules {
    fn default() -> Self {
        PlanRules {
            rewrite_dead_fraction: 0.5,
            image_chain: 16,
            force_image: false,
        }
    }
}

/// Plans a run over `segments` (ascending by seq; every one up to the head, which
/// must be retained) already judged by liveness.
pub fn plan(segments: &[SegmentFacts], rules: &PlanRules) -> Plan {
    let mut plan = Plan::default();
    let mut run: Vec<&SegmentFacts> = Vec::new();
    for s in segments {
        if s.retained {
            plan_run(&run, rules, &mut plan);
            run.clear();
        } else if s.live == 0 {
            plan.deleted.push(s.seq);
        } else {
            run.push(s);
        }
    }
    // The head is retained, so no run is left open; a run without one is not the
    // business of this run (it cannot happen with a head).
    let Some(oldest) = segments.iter().find(|s| s.retained) else {
        return plan;
    };
    let superseded = plan.superseded();
    let left: Vec<u64> = segments
        .iter()
        .filter(|s| s.seq <= oldest.seq && !superseded.contains(&s.seq))
        .map(|s| s.seq)
        .collect();
    let outputs = plan.merges.iter().filter(|m| m.at < oldest.seq).count();
    let below = left.len() + outputs;
    if below > 1 && (rules.force_image || below >= rules.image_chain) {
        // The image replaces everything at or below the point: drop the plan's work
        // there, the image does it.
        let members: Vec<u64> = segments
            .iter()
            .filter(|s| s.seq <= oldest.seq && !plan.deleted.contains(&s.seq))
            .map(|s| s.seq)
            .collect();
        plan.merges.retain(|m| m.at > oldest.seq);
        plan.demoted.retain(|q| *q > oldest.seq);
        plan.image = Some(Image {
            at: oldest.seq,
            members,
        });
    }
    plan
}

/// Decides a run of non-retained segments with live blocks: older large segments with
/// few dead blocks are left in place (demoted), so a run does not rewrite the whole
/// older history each time; the rest is merged at the run's newest seq.
fn plan_run(run: &[&SegmentFacts], rules: &PlanRules, plan: &mut Plan) {
    let Some((newest, older)) = run.split_last() else {
        return;
    };
    let total_live: u64 = run.iter().map(|s| s.live).sum();
    let mut merged: Vec<u64> = Vec::new();
    for s in older {
        let big = s.live * 2 >= total_live;
        if big && s.dead_fraction() < rules.rewrite_dead_fraction {
            plan.demoted.push(s.seq);
        } else {
            merged.push(s.seq);
        }
    }
    if merged.is_empty() && newest.dead_fraction() < rules.rewrite_dead_fraction {
        plan.demoted.push(newest.seq);
    } else {
        merged.push(newest.seq);
        plan.merges.push(Merge {
            at: newest.seq,
            members: merged,
        });
    }
}

/// Turns per-disk liveness into per-segment facts.
pub fn segment_facts(
    seqs: &[u64],
    retained: &BTreeSet<u64>,
    disks: &[Vec<SegmentLiveness>],
) -> Vec<SegmentFacts> {
    let mut by_seq: BTreeMap<u64, SegmentFacts> = seqs
        .iter()
        .map(|&seq| {
            (
                seq,
                SegmentFacts {
                    seq,
                    retained: retained.contains(&seq),
                    ..SegmentFacts::default()
                },
            )
        })
        .collect();
    for disk in disks {
        for l in disk {
            if let Some(f) = by_seq.get_mut(&l.seq) {
                f.live += l.live.len();
                f.touched += l.live.len() + l.dead;
            }
        }
    }
    by_seq.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bm(v: &[u32]) -> RoaringBitmap {
        v.iter().copied().collect()
    }

    #[test]
    fn liveness_resets_at_retained_points() {
        let touched = vec![
            (1, bm(&[1, 2, 3])),
            (2, bm(&[2])),
            (3, bm(&[3, 4])),
            (4, bm(&[1])),
            (5, bm(&[5])),
        ];
        let retained: BTreeSet<u64> = [3, 5].into();
        let l = disk_liveness(&touched, &retained);
        // 1: block 2 rewritten by 2, 3 by 3 (both before R=3): only 1 is live.
        assert_eq!(l[0].live, bm(&[1]));
        assert_eq!(l[0].dead, 2);
        assert_eq!(l[1].live, bm(&[2]));
        assert_eq!(l[2].live, bm(&[3, 4]));
        // 4: needed by 5 (nobody rewrites block 1 in (4, 5]).
        assert_eq!(l[3].live, bm(&[1]));
        assert_eq!(l[4].live, bm(&[5]));
    }

    #[test]
    fn retained_points_that_do_not_touch_the_disk_reset_too() {
        // Point 2 writes nothing on this disk but is retained: block 9 of 1 is its.
        let touched = vec![(1, bm(&[9])), (3, bm(&[9]))];
        let l = disk_liveness(&touched, &[2, 3].into());
        assert_eq!(l[0].live, bm(&[9]));
    }

    fn facts(seq: u64, retained: bool, touched: u64, live: u64) -> SegmentFacts {
        SegmentFacts {
            seq,
            retained,
            touched,
            live,
        }
    }

    #[test]
    fn runs_are_merged_dead_ones_deleted_big_ones_left() {
        let segs = vec![
            facts(1, true, 100, 100),
            facts(2, false, 10, 0),
            facts(3, false, 10, 4),
            facts(4, false, 10, 10),
            facts(5, true, 1, 1),
            facts(6, false, 1000, 990),
            facts(7, false, 10, 10),
            facts(8, true, 1, 1),
            facts(9, false, 5, 5),
            facts(10, true, 1, 1),
        ];
        let p = plan(&segs, &PlanRules::default());
        assert_eq!(p.deleted, vec![2]);
        assert_eq!(
            p.merges,
            vec![Merge {
                at: 4,
                members: vec![3, 4]
            }]
        );
        // 6 is large and nearly all live: left in place; 7 alone and all live; 9 too.
        assert_eq!(p.demoted, vec![6, 7, 9]);
        assert!(p.image.is_none());
    }

    #[test]
    fn the_chain_below_the_oldest_point_becomes_an_image() {
        let segs = vec![
            facts(1, false, 100, 50),
            facts(2, false, 10, 0),
            facts(3, false, 10, 10),
            facts(4, true, 1, 1),
            facts(5, true, 1, 1),
        ];
        let rules = PlanRules {
            force_image: true,
            ..PlanRules::default()
        };
        let p = plan(&segs, &rules);
        assert_eq!(p.deleted, vec![2]);
        assert!(p.merges.is_empty());
        assert_eq!(
            p.image,
            Some(Image {
                at: 4,
                members: vec![1, 3, 4]
            })
        );
        let p = plan(&segs, &PlanRules::default());
        assert!(p.image.is_none());
        assert_eq!(p.merges.len(), 1);
    }
}
