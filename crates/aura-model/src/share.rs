//! Integer shares: how a request's tokens are split among experts, and what tokens cost.
//! A leaf module: receipts attribute tokens with it and settlement prices them, without
//! either depending on the other for it.

/// Splits `total` into parts proportional to `weights` that add up to exactly `total`
/// (when any weight is non-zero; all zeros when every weight is zero).
///
/// Each part is first `floor(total × w_i / W)` (W the sum of the weights, computed in
/// 128 bits); the `total − Σ floor` units left over (fewer than the number of weights) go
/// one each to the parts with the largest remainders `total × w_i mod W`, ties to the
/// lower index. This is the largest-remainder (Hamilton) method: every part is within one
/// unit of its exact share.
pub fn split(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let t = u128::from(total);
    let mut parts = Vec::with_capacity(weights.len());
    let mut rems = Vec::with_capacity(weights.len());
    let mut given: u128 = 0;
    for (i, w) in weights.iter().enumerate() {
        let exact = t * u128::from(*w);
        // floor(exact / sum) ≤ total, so it fits in u64.
        let part = (exact / sum) as u64;
        given += u128::from(part);
        parts.push(part);
        rems.push((exact % sum, i));
    }
    let left = (t - given) as usize;
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in rems.into_iter().take(left) {
        parts[i] += 1;
    }
    parts
}

/// `tokens × price_per_1000 / 1000`, rounded down; `None` if it does not fit in u64.
pub fn price(tokens: u64, price_per_1000: u64) -> Option<u64> {
    u64::try_from(u128::from(tokens) * u128::from(price_per_1000) / 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn split_examples() {
        fn check(total: u64, weights: &[u64], expect: &[u64]) {
            assert_eq!(split(total, weights), expect, "{total} over {weights:?}");
        }
        check(10, &[1, 1, 1], &[4, 3, 3]);
        check(10, &[0, 0], &[0, 0]);
        check(0, &[5, 5], &[0, 0]);
        check(7, &[], &[]);
        check(100, &[1, 0, 3], &[25, 0, 75]);
        check(1, &[1, 1], &[1, 0]);
        check(5, &[2, 3], &[2, 3]);
        check(
            u64::MAX,
            &[u64::MAX, u64::MAX],
            &[u64::MAX / 2 + 1, u64::MAX / 2],
        );
    }

    #[test]
    fn pricing_rounds_down_once() {
        assert_eq!(price(1999, 1), Some(1));
        assert_eq!(price(1000, 250), Some(250));
        assert_eq!(price(3, 333), Some(0));
        assert_eq!(price(u64::MAX, 2000), None);
    }

    proptest! {
        #[test]
        fn split_adds_up_and_is_fair(total in any::<u64>(), weights in proptest::collection::vec(any::<u64>(), 0..20)) {
            let parts = split(total, &weights);
            prop_assert_eq!(parts.len(), weights.len());
            let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
            if sum == 0 {
                prop_assert!(parts.iter().all(|p| *p == 0));
            } else {
                prop_assert_eq!(parts.iter().map(|p| u128::from(*p)).sum::<u128>(), u128::from(total));
                for (p, w) in parts.iter().zip(&weights) {
                    let floor = (u128::from(total) * u128::from(*w)).checked_div(sum).unwrap();
                    prop_assert!(u128::from(*p) == floor || u128::from(*p) == floor + 1);
                }
            }
        }
    }
}
