//! "Did you mean" suggestions for misspelled names.

/// Edit distance between two strings (Levenshtein, by chars).
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate, if it is close enough to be a plausible typo.
pub fn closest<'a>(target: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (target.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (distance(target, c), c))
        .filter(|(d, c)| *d <= limit || c.starts_with(target) || target.starts_with(*c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("hello", "hello"), 0);
        assert_eq!(distance("helo", "hello"), 1);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn suggests_close_names_only() {
        let names = ["hello", "build-deploy", "test"];
        assert_eq!(closest("helo", names), Some("hello"));
        assert_eq!(closest("build", names), Some("build-deploy"));
        assert_eq!(closest("zzzzzz", names), None);
    }
}
