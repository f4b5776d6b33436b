//! Reading the admin endpoint's `/metrics` (Prometheus text format): the
//! value of one sample, found by its name and all of its labels.

/// The value of the sample `name{labels}` (labels in any order, all of
/// them) in a scrape.
pub fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let (sample_name, label_text) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (head, ""),
            };
            let mut found: Vec<(&str, &str)> = label_text
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key, value.trim_end_matches('"')))
                })
                .collect();
            let mut wanted = labels.to_vec();
            found.sort_unstable();
            wanted.sort_unstable();
            (sample_name == name && found == wanted).then(|| value.parse().ok())?
        })
}
