//! The choice behind automatic allocation: one option per item (a format per linear), each with
//! an exact cost (stored bits) and a predicted error, minimising the total error with the total
//! cost at most a capacity — the multiple-choice knapsack problem (Sinha & Zoltners, "The
//! multiple-choice knapsack problem", Operations Research 27(3), 1979).
//!
//! Exact by branch and bound: items are fixed one at a time; a subtree is cut when the error
//! already committed plus the linear-programming relaxation of the remaining items (solved
//! exactly by the greedy over each item's lower convex hull, which is the MCKP's LP optimum) cannot
//! beat the best complete choice found. The first incumbent is the LP solution rounded down,
//! so a search that stops at its node limit still returns a feasible choice (and says it is
//! not proven optimal). Costs are integers, so the feasibility test is exact.

/// One option of an item: what it costs and what error it is predicted to add.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub cost: u64,
    pub error: f64,
}

/// The chosen option of every item (indices into the item's list).
#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    pub pick: Vec<usize>,
    pub cost: u64,
    pub error: f64,
    /// The search finished: no feasible choice has a smaller total error.
    pub optimal: bool,
    /// The LP relaxation's total error: no choice does better, so `error − bound` bounds how far
    /// a search stopped at its node limit can be from the optimum.
    pub bound: f64,
    /// Branch-and-bound nodes visited.
    pub nodes: usize,
}

/// Nodes the search may visit before it settles for its best choice so far (each costs a pass
/// over the hull segments: ~1,500 on SmolLM2-135M with 7 candidates, so this is about a second).
pub const NODE_LIMIT: usize = 200_000;

/// The smallest total cost any choice has (`None` when an item has no option).
pub fn min_cost(items: &[Vec<Choice>]) -> Option<u64> {
    items.iter().map(|o| o.iter().map(|c| c.cost).min()).sum()
}

/// An item's useful options: sorted by cost, each strictly better in error than every cheaper
/// one (a costlier option that is not better is never chosen by an optimum), as indices into
/// the item's list.
fn frontier(opts: &[Choice]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..opts.len()).collect();
    idx.sort_by(|&a, &b| {
        (opts[a].cost, opts[a].error)
            .partial_cmp(&(opts[b].cost, opts[b].error))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut out: Vec<usize> = Vec::new();
    for i in idx {
        if out.last().is_none_or(|&j| opts[i].error < opts[j].error) {
            out.push(i);
        }
    }
    out
}

/// A step along an item's lower convex hull: from hull point `from` to `to`, buying
/// `gain` less error for `dcost` more bits.
#[derive(Clone, Copy, Debug)]
struct Segment {
    item: usize,
    to: usize,
    dcost: u64,
    gain: f64,
}

/// The lower convex hull's segments of one item's frontier (indices into its options).
fn hull_segments(item: usize, opts: &[Choice], front: &[usize]) -> Vec<Segment> {
    let mut hull: Vec<usize> = Vec::new();
    for &i in front {
        // Drop the last hull point while it lies on or above the line from its predecessor to
        // the new point (its efficiency would not decrease along the hull).
        while hull.len() >= 2 {
            let (a, b) = (opts[hull[hull.len() - 2]], opts[hull[hull.len() - 1]]);
            let c = opts[i];
            let s1 = (a.error - b.error) / (b.cost - a.cost) as f64;
            let s2 = (b.error - c.error) / (c.cost - b.cost) as f64;
            if s2 >= s1 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(i);
    }
    hull.windows(2)
        .map(|w| Segment {
            item,
            to: w[1],
            dcost: opts[w[1]].cost - opts[w[0]].cost,
            gain: opts[w[0]].error - opts[w[1]].error,
        })
        .collect()
}

struct Search<'a> {
    items: &'a [Vec<Choice>],
    /// Item order of the search (largest error spread first).
    order: Vec<usize>,
    /// Position of each item in `order`.
    rank: Vec<usize>,
    /// Every item's hull segments, most error removed per bit first.
    segments: Vec<Segment>,
    /// Per item: its frontier's cheapest option.
    cheapest: Vec<usize>,
    fronts: Vec<Vec<usize>>,
    /// Suffix sums over `order` of the cheapest cost and its error.
    rest_cost: Vec<u64>,
    rest_error: Vec<f64>,
    best: Option<(f64, Vec<usize>)>,
    nodes: usize,
    limit: usize,
}

impl Search<'_> {
    /// The LP relaxation over items `order[depth..]` with `room` bits: their total error,
    /// or `None` when even their cheapest options do not fit. With `round`, the LP solution
    /// rounded down (the fractional segment dropped) is also returned as picks.
    fn relax(&self, depth: usize, room: u64, round: bool) -> Option<(f64, Vec<(usize, usize)>)> {
        let mut room = room.checked_sub(self.rest_cost[depth])?;
        let mut err = self.rest_error[depth];
        let mut picks = Vec::new();
        // A segment whose predecessor on the same item was skipped must not be taken.
        let mut blocked = vec![false; if round { self.items.len() } else { 0 }];
        for s in &self.segments {
            if self.rank[s.item] < depth {
                continue;
            }
            if round && blocked[s.item] {
                continue;
            }
            if s.dcost <= room {
                room -= s.dcost;
                err -= s.gain;
                if round {
                    picks.push((s.item, s.to));
                }
            } else if round {
                blocked[s.item] = true;
            } else {
                // The fractional part of the one segment that does not fit, then stop.
                err -= s.gain * room as f64 / s.dcost as f64;
                break;
            }
        }
        Some((err, picks))
    }

    fn dfs(&mut self, depth: usize, room: u64, err: f64, pick: &mut Vec<usize>) {
        self.nodes += 1;
        if depth == self.order.len() {
            if self.best.as_ref().is_none_or(|(b, _)| err < *b) {
                self.best = Some((err, pick.clone()));
            }
            return;
        }
        if self.nodes > self.limit {
            return;
        }
        let Some((bound, _)) = self.relax(depth, room, false) else {
            return;
        };
        if let Some((b, _)) = &self.best {
            // Cut ties too: an equal total is no improvement.
            if err + bound >= *b - 1e-12 * b.abs().max(1e-300) {
                return;
            }
        }
        let item = self.order[depth];
        let opts = &self.items[item];
        // Costliest (most accurate) options first, so good complete choices come early.
        let front = self.fronts[item].clone();
        for &o in front.iter().rev() {
            let c = opts[o];
            if c.cost > room {
                continue;
            }
            pick[item] = o;
            self.dfs(depth + 1, room - c.cost, err + c.error, pick);
            if self.nodes > self.limit {
                return;
            }
        }
    }
}

/// The choice of one option per item with total cost ≤ `capacity` and the least total error;
/// `None` when no choice fits (`min_cost` says what the least is). `limit` bounds the
/// branch-and-bound nodes (`NODE_LIMIT`).
pub fn solve(items: &[Vec<Choice>], capacity: u64, limit: usize) -> Option<Solution> {
    let n = items.len();
    let fronts: Vec<Vec<usize>> = items.iter().map(|o| frontier(o)).collect();
    if fronts.iter().any(Vec::is_empty) {
        return None;
    }
    let cheapest: Vec<usize> = fronts.iter().map(|f| f[0]).collect();
    let mut segments: Vec<Segment> = (0..n)
        .flat_map(|i| hull_segments(i, &items[i], &fronts[i]))
        .collect();
    // Most error removed per bit first; ties by item, so the order is deterministic.
    segments.sort_by(|a, b| {
        let (ea, eb) = (a.gain / a.dcost as f64, b.gain / b.dcost as f64);
        eb.partial_cmp(&ea)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.item.cmp(&b.item))
    });
    let spread =
        |i: usize| items[i][cheapest[i]].error - items[i][*fronts[i].last().unwrap_or(&0)].error;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        spread(b)
            .partial_cmp(&spread(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut rank = vec![0; n];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    let mut rest_cost = vec![0u64; n + 1];
    let mut rest_error = vec![0f64; n + 1];
    for d in (0..n).rev() {
        let c = items[order[d]][cheapest[order[d]]];
        rest_cost[d] = rest_cost[d + 1] + c.cost;
        rest_error[d] = rest_error[d + 1] + c.error;
    }
    let mut s = Search {
        items,
        order,
        rank,
        segments,
        cheapest: cheapest.clone(),
        fronts,
        rest_cost,
        rest_error,
        best: None,
        nodes: 0,
        limit,
    };
    let (bound, _) = s.relax(0, capacity, false)?;
    // The incumbent: the LP solution rounded down.
    let (_, picks) = s.relax(0, capacity, true)?;
    let mut pick = s.cheapest.clone();
    for (item, to) in picks {
        pick[item] = to;
    }
    let err: f64 = pick
        .iter()
        .enumerate()
        .map(|(i, &o)| items[i][o].error)
        .sum();
    s.best = Some((err, pick.clone()));
    let mut scratch = s.cheapest.clone();
    s.dfs(0, capacity, 0.0, &mut scratch);
    let optimal = s.nodes <= s.limit;
    let (error, pick) = s.best?;
    let cost = pick
        .iter()
        .enumerate()
        .map(|(i, &o)| items[i][o].cost)
        .sum();
    Some(Solution {
        pick,
        cost,
        error,
        optimal,
        bound,
        nodes: s.nodes,
    })
}
