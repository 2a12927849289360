//! "Did you mean ...?" for parameter names: the known name nearest in edit distance
//! (Damerau: a swapped pair of letters counts as one edit, the commonest typing slip).

use crate::config::known_parameters;

/// The known parameter nearest to `name`, when it is near enough to be a slip of the
/// keyboard rather than a different word: at most a third of the name's length in edits
/// (at least one, at most three).
pub fn nearest_parameter(name: &str) -> Option<&'static str> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    let lowered = name.to_ascii_lowercase();
    known_parameters()
        .iter()
        .map(|info| (distance(&lowered, info.name), info.name))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, candidate)| (d, candidate))
        .map(|(_, candidate)| candidate)
}

/// `"unknown parameter \"x\""`, with ` (did you mean "y"?)` when a near name exists.
pub fn unknown_parameter(name: &str) -> String {
    match nearest_parameter(name) {
        Some(near) => format!("unknown parameter \"{name}\" (did you mean \"{near}\"?)"),
        None => format!("unknown parameter \"{name}\""),
    }
}

/// Optimal string alignment distance: insertions, deletions, substitutions and
/// transpositions of neighbours, each costing one.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows suffice: the transposition looks two rows back.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("ab", "ba"), 1);
        assert_eq!(distance("mydestinaton", "mydestination"), 1);
    }

    #[test]
    fn slips_find_their_parameter() {
        assert_eq!(nearest_parameter("mydestinaton"), Some("mydestination"));
        assert_eq!(nearest_parameter("relyahost"), Some("relayhost"));
        assert_eq!(nearest_parameter("MYHOSTNAME"), Some("myhostname"));
        assert_eq!(nearest_parameter("queue_dir"), None);
        assert_eq!(nearest_parameter("completely_unrelated"), None);
        assert_eq!(
            unknown_parameter("mydestinaton"),
            "unknown parameter \"mydestinaton\" (did you mean \"mydestination\"?)"
        );
        assert_eq!(unknown_parameter("zzz"), "unknown parameter \"zzz\"");
    }
}
