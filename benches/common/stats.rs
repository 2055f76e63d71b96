//! Statistics of interleaved rounds: the median is the upper middle of the sorted samples.

/// (min, median, max) of `v`; `None` if it is empty.
pub fn spread(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.sort_by(f64::total_cmp);
    Some((*v.first()?, v[v.len() / 2], v[v.len() - 1]))
}

/// (min, median, max) of `v`, which must not be empty.
pub fn min_median_max(v: Vec<f64>) -> (f64, f64, f64) {
    spread(v).expect("no samples")
}

/// The median of `v`; NaN if it is empty.
pub fn median(v: Vec<f64>) -> f64 {
    spread(v).map_or(f64::NAN, |(_, med, _)| med)
}
