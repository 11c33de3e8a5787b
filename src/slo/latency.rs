//! The intake's latency distribution per minute, fleet-wide, for quantiles (the console's p95):
//! each request lands in one of 64 buckets a quarter of a doubling wide (100 µs to 6.5 s, the
//! last one open), counted in memory with the route counts and added to the same per-minute
//! Redis hashes (`latency|{bucket}`). A quantile is read back as the geometric middle of its
//! bucket: within about 9 % of the true value, from any number of members.

use std::time::Duration;

/// Buckets per distribution.
pub const BUCKETS: usize = 64;
/// The lower bound of the first bucket, in µs.
const FIRST_US: f64 = 100.0;
/// Buckets per doubling.
const PER_DOUBLING: f64 = 4.0;
/// The hash field prefix of a bucket (no `|`: route fields are `{route}|{what}`).
pub const FIELD_PREFIX: &str = "latency:";

/// Request counts per bucket.
pub type Histogram = [i64; BUCKETS];

/// The bucket of a request that took `elapsed`.
pub fn bucket(elapsed: Duration) -> usize {
    let us = elapsed.as_secs_f64() * 1e6;
    if us <= FIRST_US {
        return 0;
    }
    let k = ((us / FIRST_US).log2() * PER_DOUBLING).floor();
    if k.is_finite() { (k as usize).min(BUCKETS - 1) } else { BUCKETS - 1 }
}

/// The hash field of bucket `k`.
pub fn field(k: usize) -> String {
    format!("{FIELD_PREFIX}{k}")
}

/// The bucket a hash field names, if it names one.
pub fn parse_field(field: &str) -> Option<usize> {
    field.strip_prefix(FIELD_PREFIX)?.parse().ok().filter(|k| *k < BUCKETS)
}

/// The `q` quantile (0 < q ≤ 1) of `histogram`, or None when it counts nothing.
pub fn quantile(histogram: &Histogram, q: f64) -> Option<Duration> {
    let total: i64 = histogram.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as i64;
    let mut seen = 0;
    let k = histogram.iter().position(|n| {
        seen += n;
        seen >= rank
    })?;
    let middle_us = FIRST_US * ((k as f64 + 0.5) / PER_DOUBLING).exp2();
    Some(Duration::from_secs_f64(middle_us / 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_lands_within_a_bucket_of_the_truth() {
        let mut h: Histogram = [0; BUCKETS];
        // 95 fast requests (2 ms) and 5 slow ones (400 ms): p95 is 2 ms, p99 is 400 ms.
        h[bucket(Duration::from_millis(2))] += 95;
        h[bucket(Duration::from_millis(400))] += 5;
        let p95 = quantile(&h, 0.95).expect("p95").as_secs_f64();
        let p99 = quantile(&h, 0.99).expect("p99").as_secs_f64();
        assert!((p95 / 0.002 - 1.0).abs() < 0.1, "{p95}");
        assert!((p99 / 0.4 - 1.0).abs() < 0.1, "{p99}");
        assert_eq!(quantile(&[0; BUCKETS], 0.95), None);
        assert_eq!((bucket(Duration::ZERO), bucket(Duration::from_secs(3600))), (0, BUCKETS - 1));
        assert_eq!(parse_field(&field(17)), Some(17));
        assert_eq!(parse_field("latency:64"), None);
    }
}
