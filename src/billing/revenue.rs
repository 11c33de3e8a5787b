//! Monthly recurring revenue of a subscription, from its mirrored items: each licensed item's
//! price × quantity, normalised to a month (a yearly price is a twelfth, a weekly one 52/12,
//! a daily one 365/12, each divided by its interval count), in the currency's minor units.
//! Metered items bill usage, not a recurring amount, and are left out; so are items whose
//! price has no unit amount (tiered prices). A subscription has one currency at Stripe.

use super::access::Item;

/// The subscription's MRR: (currency, minor units per month), or none when no item counts.
pub fn monthly(items: &[Item]) -> Option<(String, i64)> {
    let mut currency: Option<&str> = None;
    let mut total: i128 = 0;
    let mut counted = false;
    for item in items.iter().filter(|i| !i.metered) {
        let (Some(amount), Some(cur), Some(interval)) = (item.unit_amount, item.currency.as_deref(), item.interval.as_deref()) else { continue };
        // Per month, in 1/12ths so a yearly price divides exactly until the end.
        let twelfths_per_period: i128 = match interval {
            "month" => 12,
            "year" => 1,
            "week" => 52,
            "day" => 365,
            _ => continue,
        };
        let count = i128::from(item.interval_count.unwrap_or(1).max(1));
        total += i128::from(amount) * i128::from(item.quantity.max(0)) * twelfths_per_period / count;
        currency.get_or_insert(cur);
        counted = true;
    }
    // Rounded to the nearest minor unit, once.
    let monthly = (total + 6) / 12;
    counted.then(|| (currency.unwrap_or("usd").to_owned(), i64::try_from(monthly).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(amount: i64, currency: &str, interval: &str, count: i64, quantity: i64, metered: bool) -> Item {
        Item {
            price: "price_x".into(),
            product: None,
            quantity,
            metered,
            unit_amount: Some(amount),
            currency: Some(currency.into()),
            interval: Some(interval.into()),
            interval_count: Some(count),
        }
    }

    #[test]
    fn prices_are_normalised_to_a_month_and_metered_items_left_out() {
        assert_eq!(monthly(&[item(2000, "usd", "month", 1, 1, false)]), Some(("usd".into(), 2000)));
        assert_eq!(monthly(&[item(24000, "eur", "year", 1, 1, false)]), Some(("eur".into(), 2000)));
        // A plan with three seats of an add-on, and a metered item that does not count.
        let items = [item(5000, "usd", "month", 1, 1, false), item(1000, "usd", "month", 1, 3, false), item(1, "usd", "month", 1, 1, true)];
        assert_eq!(monthly(&items), Some(("usd".into(), 8000)));
        assert_eq!(monthly(&[item(1000, "usd", "week", 1, 1, false)]), Some(("usd".into(), 4333)));
        assert_eq!(monthly(&[item(9000, "usd", "month", 3, 1, false)]), Some(("usd".into(), 3000)));
        assert_eq!(monthly(&[item(1, "usd", "month", 1, 1, true)]), None);
        let tiered = Item { unit_amount: None, ..item(0, "usd", "month", 1, 1, false) };
        assert_eq!(monthly(&[tiered]), None);
    }
}
