//! Which units go, and how many per layer.
//!
//! Every group gets an *order of removal* over its candidates — single units, or whole KV
//! groups of grouped-query attention — by scores or by greedy least-squares removal
//! ([`crate::autoslim::refit::greedy_removal`]), each step with its cost. Its *levels* are the
//! numbers of candidates it may stop at: the layout every loader accepts (as many query heads
//! from every KV group), kept widths rounded to a multiple, and with a global budget a floor.
//! Then each group stops at one level: the same fraction everywhere, or — with a global budget —
//! where the removal costs per weight removed are lowest, one move at a time (as ZipLM and
//! OSSCAR spend a budget).

use crate::autoslim::prune::{Plan, PlanGroup, Targets};
use crate::model::discover::{Group, Kind};
use crate::model::stats::weight_of;
use serde::{Deserialize, Serialize};
use tract_core::internal::*;

/// How the query heads of grouped-query attention are removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvLayout {
    /// As many query heads from every KV group (the layout every loader accepts: one
    /// `num_key_value_heads`, one repetition factor).
    #[default]
    Equal,
    /// Whole KV groups: every query head of a group and its KV head.
    Whole,
    /// Any query heads; groups may keep different numbers (the pass gathers KV heads then).
    Any,
}

impl std::fmt::Display for KvLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvLayout::Equal => "equal",
            KvLayout::Whole => "whole",
            KvLayout::Any => "any",
        })
    }
}

/// What a group may remove, one candidate at a time.
#[derive(Clone, Debug)]
pub struct Candidates {
    /// The units each candidate removes together.
    pub units: Vec<Vec<usize>>,
    /// When removal must stay balanced: the bucket (KV group) of each candidate. The next
    /// candidate always comes from a bucket that has lost the fewest so far.
    pub bucket: Option<Vec<usize>>,
}

impl Candidates {
    /// The candidates of a group: its units, grouped or balanced by KV group for grouped-query
    /// attention as `layout` says.
    pub fn of(group: &Group, layout: KvLayout) -> Candidates {
        let per_kv = query_heads_per_kv(group);
        let singles = (0..group.units).map(|u| vec![u]).collect();
        match layout {
            _ if per_kv == 1 => Candidates {
                units: singles,
                bucket: None,
            },
            KvLayout::Equal => Candidates {
                units: singles,
                bucket: Some((0..group.units).map(|u| u / per_kv).collect()),
            },
            KvLayout::Whole => Candidates {
                units: (0..group.kv_heads)
                    .map(|g| (g * per_kv..(g + 1) * per_kv).collect())
                    .collect(),
                bucket: None,
            },
            KvLayout::Any => Candidates {
                units: singles,
                bucket: None,
            },
        }
    }

    /// How many candidates there are.
    fn len(&self) -> usize {
        self.units.len()
    }

    /// Units per candidate (all candidates are the same size).
    pub fn size(&self) -> usize {
        self.units.first().map_or(1, Vec::len)
    }

    /// How many buckets removal keeps balanced (1 without).
    fn buckets(&self) -> usize {
        self.bucket
            .as_ref()
            .map_or(1, |b| b.iter().max().map_or(1, |m| m + 1))
    }
}

/// Query heads sharing one KV head (1 for FFN groups and plain multi-head attention).
fn query_heads_per_kv(group: &Group) -> usize {
    if group.kind == Kind::Heads && group.kv_heads > 0 && group.kv_heads < group.units {
        group.units / group.kv_heads
    } else {
        1
    }
}

/// Candidates taken one at a time, keeping buckets balanced.
pub struct Selection<'a> {
    candidates: &'a Candidates,
    alive: Vec<bool>,
    taken: Vec<usize>,
}

impl<'a> Selection<'a> {
    /// Nothing taken yet.
    pub fn new(candidates: &'a Candidates) -> Selection<'a> {
        Selection {
            candidates,
            alive: vec![true; candidates.len()],
            taken: vec![0; candidates.buckets()],
        }
    }

    /// Whether `c` may be taken next.
    pub fn eligible(&self, c: usize) -> bool {
        if !self.alive[c] {
            return false;
        }
        let Some(bucket) = &self.candidates.bucket else {
            return true;
        };
        let fewest = self.taken.iter().min().copied().unwrap_or(0);
        self.taken[bucket[c]] == fewest
    }

    /// The eligible candidate of least `cost` (ties to the lower index), if any is left.
    pub fn cheapest(&self, cost: impl Fn(usize) -> f64) -> Option<usize> {
        (0..self.alive.len())
            .filter(|c| self.eligible(*c))
            .min_by(|a, b| cost(*a).total_cmp(&cost(*b)).then(a.cmp(b)))
    }

    /// Takes `c`.
    pub fn take(&mut self, c: usize) {
        self.alive[c] = false;
        if let Some(bucket) = &self.candidates.bucket {
            self.taken[bucket[c]] += 1;
        }
    }
}

/// One step of a removal order: the candidate and what removing it costs, comparable across the
/// groups of a kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// The candidate removed.
    pub candidate: usize,
    /// Its cost.
    pub cost: f64,
}

/// The first `steps` of the removal order by scores (lowest first, balanced): a candidate's
/// score is the sum of its units' scores, its cost that relative to the group's mean.
pub fn order_by_scores(candidates: &Candidates, scores: &[f32], steps: usize) -> Vec<Step> {
    let score = |c: usize| -> f64 { candidates.units[c].iter().map(|u| scores[*u] as f64).sum() };
    let mean = (0..candidates.len()).map(score).sum::<f64>() / candidates.len().max(1) as f64;
    let scale = if mean > 0.0 { mean } else { 1.0 };
    let mut selection = Selection::new(candidates);
    let mut order = vec![];
    while order.len() < steps {
        let Some(c) = selection.cheapest(score) else {
            break;
        };
        selection.take(c);
        order.push(Step {
            candidate: c,
            cost: score(c) / scale,
        });
    }
    order
}

/// How far removal may go in each group, and where it stops.
#[derive(Clone, Debug)]
pub struct Levels {
    /// The numbers of candidates a group may remove, ascending, from 0.
    pub allowed: Vec<usize>,
}

impl Levels {
    /// The levels of `group` under `targets`: a balanced layout stops only where every bucket
    /// has lost as many; kept widths are multiples of `multiple_of` (FFN) or `heads_multiple_of`
    /// (kept query heads per KV group); with a global budget every layer keeps its floor, and
    /// loses at most twice the kind's target fraction.
    pub fn of(group: &Group, candidates: &Candidates, targets: &Targets) -> Levels {
        let n = candidates.len();
        let buckets = candidates.buckets();
        let per_bucket = n / buckets;
        let multiple = match group.kind {
            Kind::Ffn => targets.multiple_of.max(1),
            Kind::Heads => targets.heads_multiple_of.max(1),
        };
        let most = if targets.global {
            let floor = ((targets.floor * n as f64).ceil() as usize).clamp(1, n);
            let ceiling = (2.0 * targets.of(group.kind) * n as f64).ceil() as usize;
            (n - floor).min(ceiling)
        } else {
            n
        };
        let allowed = (0..=most)
            .filter(|&level| {
                if level == 0 {
                    return true;
                }
                if !level.is_multiple_of(buckets) {
                    return false;
                }
                // Kept candidates per bucket (a KV group's query heads, or the layer's units).
                let kept = per_bucket - level / buckets;
                let kept_units = kept
                    * if candidates.bucket.is_some() {
                        1
                    } else {
                        candidates.size()
                    };
                // Nothing kept is a multiple of anything, but rounding a width to a multiple
                // means keeping some: a whole block goes only without rounding.
                kept_units.is_multiple_of(multiple) && (kept_units > 0 || multiple == 1)
            })
            .collect();
        Levels { allowed }
    }

    /// The deepest allowed level.
    pub fn deepest(&self) -> usize {
        self.allowed.last().copied().unwrap_or(0)
    }

    /// The allowed level whose removed units come nearest `wanted` (ties to the fewer removed).
    pub fn nearest(&self, wanted: f64, size: usize) -> usize {
        self.allowed
            .iter()
            .copied()
            .min_by(|a, b| {
                let off = |l: usize| ((l * size) as f64 - wanted).abs();
                off(*a).total_cmp(&off(*b)).then(a.cmp(b))
            })
            .unwrap_or(0)
    }
}

/// Everything the choice needs about one group.
pub struct Choice {
    /// The group's candidates.
    pub candidates: Candidates,
    /// Where it may stop.
    pub levels: Levels,
    /// Its removal order (at least as deep as the level it stops at).
    pub order: Vec<Step>,
    /// Weights (in the consumer and its producers) one unit accounts for: the FLOPs per token
    /// a unit costs, up to a factor 2.
    pub weights_per_unit: f64,
    /// The ridge the order's least-squares removal used, for the consumer's refit.
    pub ridge: Option<f64>,
}

/// Weights one unit of `group` accounts for in its consumer and producers.
pub fn weights_per_unit(model: &TypedModel, group: &Group) -> TractResult<f64> {
    let mut total = weight_of(model, group.weight)?.len();
    for (weight, _) in &group.producers {
        total += weight_of(model, *weight)?.len();
    }
    Ok(total as f64 / group.units.max(1) as f64)
}

/// The level each group stops at without a global budget: the target fraction of its units,
/// rounded to the nearest allowed level.
pub fn uniform_level(
    group: &Group,
    candidates: &Candidates,
    levels: &Levels,
    targets: &Targets,
) -> usize {
    let wanted = (targets.of(group.kind) * group.units as f64).round();
    levels.nearest(wanted, candidates.size())
}

/// Levels for a global budget of one kind: the kind's target fraction of its units' weights is
/// removed where it costs least — repeatedly the move of one group to its next allowed level
/// with the least cost per weight removed, among the moves that bring the total closer to the
/// budget.
fn global_levels(
    groups: &[Group],
    choices: &[Choice],
    targets: &Targets,
    kind: Kind,
    levels: &mut [usize],
) {
    let members: Vec<usize> = (0..groups.len())
        .filter(|&i| groups[i].kind == kind)
        .collect();
    let weights = |i: usize, from: usize, to: usize| {
        ((to - from) * choices[i].candidates.size()) as f64 * choices[i].weights_per_unit
    };
    let budget = targets.of(kind)
        * members
            .iter()
            .map(|&i| groups[i].units as f64 * choices[i].weights_per_unit)
            .sum::<f64>();
    let mut removed = 0.0;
    members.iter().for_each(|&i| levels[i] = 0);
    loop {
        let moves = members.iter().filter_map(|&i| {
            let next = *choices[i].levels.allowed.iter().find(|l| **l > levels[i])?;
            let next = next.min(choices[i].order.len());
            if next <= levels[i] {
                return None;
            }
            let size = weights(i, levels[i], next);
            let closer = (removed + size - budget).abs() <= (removed - budget).abs();
            let cost: f64 = choices[i].order[levels[i]..next]
                .iter()
                .map(|s| s.cost)
                .sum();
            closer.then_some((cost / size, i, next, size))
        });
        let Some((_, i, next, size)) = moves.min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        else {
            break;
        };
        levels[i] = next;
        removed += size;
    }
}

/// The plan: where each group stops (uniform or by a global budget) and, per group, the units of
/// the first candidates of its order up to there.
pub fn plan_of(groups: &[Group], choices: &[Choice], targets: &Targets) -> Plan {
    let mut levels: Vec<usize> = groups
        .iter()
        .zip(choices)
        .map(|(g, c)| uniform_level(g, &c.candidates, &c.levels, targets))
        .collect();
    if targets.global {
        for kind in [Kind::Ffn, Kind::Heads] {
            global_levels(groups, choices, targets, kind, &mut levels);
        }
    }
    let groups = groups
        .iter()
        .zip(choices)
        .zip(levels)
        .map(|((g, c), level)| {
            let removed = units_of(&c.candidates, &c.order[..level.min(c.order.len())]);
            PlanGroup {
                kind: g.kind,
                layer: g.layer,
                name: g.name.clone(),
                units: g.units,
                removed,
                ridge: c.ridge,
            }
        })
        .collect();
    Plan { groups }
}

/// How deep each group's order must go: to its uniform level, or with a global budget to its
/// deepest allowed level.
pub fn depth(group: &Group, candidates: &Candidates, levels: &Levels, targets: &Targets) -> usize {
    if targets.global && targets.of(group.kind) > 0.0 {
        levels.deepest()
    } else {
        uniform_level(group, candidates, levels, targets)
    }
}

impl Choice {
    /// The choice of `group` under `targets`, its removal order (and the ridge it used)
    /// `order(candidates, levels, steps)` as deep as the targets need.
    pub fn new(
        model: &TypedModel,
        group: &Group,
        targets: &Targets,
        order: impl FnOnce(&Candidates, &Levels, usize) -> TractResult<(Vec<Step>, Option<f64>)>,
    ) -> TractResult<Choice> {
        let candidates = Candidates::of(group, targets.kv_layout);
        let levels = Levels::of(group, &candidates, targets);
        let steps = depth(group, &candidates, &levels, targets);
        let (order, ridge) = order(&candidates, &levels, steps)?;
        Ok(Choice {
            order,
            weights_per_unit: weights_per_unit(model, group)?,
            ridge,
            candidates,
            levels,
        })
    }
}

/// The units of the first `steps` of `order`, sorted.
pub fn units_of(candidates: &Candidates, order: &[Step]) -> Vec<usize> {
    let mut units: Vec<usize> = order
        .iter()
        .flat_map(|s| candidates.units[s.candidate].iter().copied())
        .collect();
    units.sort_unstable();
    units
}

/// Chooses the units to remove by scores alone (no greedy removal): per group the lowest-scored
/// candidates, as many as the targets ask.
pub fn choose(
    model: &TypedModel,
    groups: &[Group],
    scores: &[Vec<f32>],
    targets: &Targets,
) -> TractResult<Plan> {
    let choices = groups
        .iter()
        .zip(scores)
        .map(|(g, s)| {
            Choice::new(model, g, targets, |candidates, _, steps| {
                Ok((order_by_scores(candidates, s, steps), None))
            })
        })
        .collect::<TractResult<Vec<_>>>()?;
    Ok(plan_of(groups, &choices, targets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::discover::groups;

    /// BERT's FFN groups, and their choices when each removal step of layer `i` costs `cost(i, k)`.
    fn ffn_choices(
        targets: &Targets,
        cost: impl Fn(usize, usize) -> f64,
    ) -> (Vec<Group>, Vec<Choice>) {
        let model = crate::autoslim::calibrated::tests::bert();
        let found: Vec<Group> = groups(&model)
            .unwrap()
            .into_iter()
            .filter(|g| g.kind == Kind::Ffn)
            .collect();
        let choices = found
            .iter()
            .enumerate()
            .map(|(i, g)| {
                Choice::new(&model, g, targets, |_, _, steps| {
                    let order = (0..steps)
                        .map(|k| Step {
                            candidate: k,
                            cost: cost(i, k),
                        })
                        .collect();
                    Ok((order, None))
                })
                .unwrap()
            })
            .collect();
        (found, choices)
    }

    fn removed(plan: &Plan) -> Vec<usize> {
        plan.groups.iter().map(|g| g.removed.len()).collect()
    }

    #[test]
    fn a_global_budget_goes_where_removal_costs_least() {
        let global = Targets {
            global: true,
            ..Targets::per_layer(0.25, 0.0)
        };
        // The first layer's units cost nothing to remove: it loses what its ceiling allows
        // (twice the fraction), the others share the rest.
        let (found, choices) = ffn_choices(&global, |i, _| if i == 0 { 0.0 } else { 1.0 });
        let units: Vec<usize> = found.iter().map(|g| g.units).collect();
        let total: usize = units.iter().sum();
        let plan = plan_of(&found, &choices, &global);
        let counts = removed(&plan);
        assert_eq!(counts[0], units[0] / 2, "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), total / 4, "{counts:?}");

        // Costs growing twice as fast in the first layer: it loses about half as many.
        let (found, choices) = ffn_choices(&global, |i, k| {
            (k + 1) as f64 * if i == 0 { 2.0 } else { 1.0 }
        });
        let counts = removed(&plan_of(&found, &choices, &global));
        assert!(
            counts[1..].iter().all(|c| c.abs_diff(2 * counts[0]) <= 2),
            "{counts:?}"
        );

        // The same costs without a global budget: the same fraction everywhere.
        let uniform = Targets::per_layer(0.25, 0.0);
        let (found, choices) = ffn_choices(&uniform, |i, _| if i == 0 { 0.0 } else { 1.0 });
        let counts = removed(&plan_of(&found, &choices, &uniform));
        for (count, units) in counts.iter().zip(&units) {
            assert_eq!(*count, (*units as f64 / 4.0).round() as usize);
        }
    }
}
