//! Counting what signatures proved toward a threshold: distinct signers,
//! each backed by a different signing identity, and a refusal reason a node
//! operator can act on. Pure bookkeeping over [`Checked`] results; this
//! module must not verify anything.

use std::collections::{BTreeSet, HashMap};

use super::verify::Checked;
use crate::policy::Signer;

/// Rejection details kept for the refusal message.
const MAX_DETAILS: usize = 3;

/// Signatures checked so far for one digest, and which signers they satisfy.
#[derive(Debug, Default)]
pub struct Tally {
    checked: usize,
    /// (signer index, identity, how it is shown)
    satisfied: Vec<(usize, String, String)>,
    rejections: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, signers: &[Signer], checked: Checked) {
        self.checked += 1;
        for (i, identity) in checked.matched {
            if !self
                .satisfied
                .iter()
                .any(|(j, id, _)| *j == i && *id == identity)
            {
                let shown = signers[i].identified(&identity);
                self.satisfied.push((i, identity, shown));
            }
        }
        if let Some(r) = checked.rejection {
            self.rejections.push(r);
        }
    }

    pub fn checked(&self) -> usize {
        self.checked
    }

    /// The largest set of signers each backed by a different signing identity
    /// (a maximum bipartite matching): two signatures by one key, or one
    /// certificate matching two signer entries, count once.
    fn matching(&self) -> Vec<(usize, String)> {
        let signers: BTreeSet<usize> = self.satisfied.iter().map(|(i, _, _)| *i).collect();
        let mut owner: HashMap<&str, usize> = HashMap::new();
        fn augment<'a>(
            s: usize,
            edges: &'a [(usize, String, String)],
            seen: &mut BTreeSet<&'a str>,
            owner: &mut HashMap<&'a str, usize>,
        ) -> bool {
            for (_, id, _) in edges.iter().filter(|(i, _, _)| *i == s) {
                if seen.insert(id.as_str()) {
                    let free = match owner.get(id.as_str()) {
                        None => true,
                        Some(&other) => augment(other, edges, seen, owner),
                    };
                    if free {
                        owner.insert(id.as_str(), s);
                        return true;
                    }
                }
            }
            false
        }
        for s in signers {
            let mut seen = BTreeSet::new();
            augment(s, &self.satisfied, &mut seen, &mut owner);
        }
        let mut out: Vec<(usize, String)> = owner
            .into_iter()
            .map(|(id, s)| (s, id.to_owned()))
            .collect();
        out.sort();
        out
    }

    /// Distinct signers verified.
    pub fn distinct(&self) -> usize {
        self.matching().len()
    }

    /// The verified signers, described.
    pub fn signers(&self) -> Vec<String> {
        self.matching()
            .into_iter()
            .filter_map(|(s, id)| {
                self.satisfied
                    .iter()
                    .find(|(i, sid, _)| *i == s && *sid == id)
                    .map(|(_, _, shown)| shown.clone())
            })
            .collect()
    }

    /// A refusal reason a node operator can act on.
    pub fn failure_reason(&self, threshold: usize, skipped: &[String]) -> String {
        let matched = self.distinct();
        let mut reason = if matched == 0 {
            format!(
                "no signature from a required signer: {} signatures checked, 0 matched",
                self.checked
            )
        } else {
            format!(
                "{matched} of {threshold} required signers verified: {} signatures checked",
                self.checked
            )
        };
        // What was skipped (over a cap, malformed) first: it explains what
        // was never considered. Then why signatures failed, without repeats.
        let mut details: Vec<&str> = Vec::new();
        for d in skipped.iter().chain(&self.rejections) {
            if details.len() < MAX_DETAILS && !details.contains(&d.as_str()) {
                details.push(d);
            }
        }
        if !details.is_empty() {
            reason.push_str(&format!(" ({})", details.join("; ")));
        }
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(edges: &[(usize, &str)]) -> Tally {
        Tally {
            checked: edges.len(),
            satisfied: edges
                .iter()
                .map(|(i, id)| (*i, (*id).to_owned(), format!("signer {i}")))
                .collect(),
            rejections: Vec::new(),
        }
    }

    #[test]
    fn distinct_signers_need_distinct_identities() {
        // Two signatures by one key: one signer.
        assert_eq!(tally(&[(0, "key a"), (0, "key a")]).distinct(), 1);
        // One certificate matching two keyless entries counts once.
        assert_eq!(tally(&[(0, "cert x"), (1, "cert x")]).distinct(), 1);
        // Two certificates, two entries: two, even when both match entry 0.
        assert_eq!(
            tally(&[(0, "cert x"), (0, "cert y"), (1, "cert x")]).distinct(),
            2
        );
        assert_eq!(tally(&[]).distinct(), 0);
    }

    #[test]
    fn failure_reasons_count_and_explain() {
        let mut t = tally(&[]);
        t.checked = 2;
        t.rejections
            .push(".sig layer x: signed for another image".into());
        let r = t.failure_reason(1, &["junk referrer".into()]);
        assert_eq!(
            r,
            "no signature from a required signer: 2 signatures checked, 0 matched (junk referrer; .sig layer x: signed for another image)"
        );
    }
}
