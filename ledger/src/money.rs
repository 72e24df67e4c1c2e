//! Money arithmetic: integer minor units (cents), energy charges accumulated in micro-units and rounded
//! half-to-even at each checkpoint with the remainder carried, so that rounding neither gains nor loses
//! money over time.
//!
//! Units:
//! - amounts are `i64` **minor units** (cents for EUR);
//! - rates are **milli-minor units per kWh** (`23_450` = 23.45 cents per kWh);
//! - energy is **Wh**; Wh × (milli-minor per kWh) = **micro-minor units** (10⁻⁶ cent), exactly.

/// Micro-units in one minor unit.
pub const MICRO_PER_MINOR: i128 = 1_000_000;

/// Rounds `micro` micro-units to whole minor units, half to even; returns the rounded amount and the
/// remainder (`micro - rounded × 10⁶`, between −500 000 and +500 000).
pub fn round_half_even(micro: i128) -> (i128, i128) {
    let q = micro.div_euclid(MICRO_PER_MINOR);
    let r = micro.rem_euclid(MICRO_PER_MINOR);
    let half = MICRO_PER_MINOR / 2;
    let up = r > half || (r == half && q % 2 != 0);
    let q = if up { q + 1 } else { q };
    (q, micro - q * MICRO_PER_MINOR)
}

/// Converts a rounded amount to `i64` minor units, saturating (no real charge comes near the limit).
pub fn to_minor(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Charges `micro` on top of a carried remainder: returns the whole minor units to charge now and the new
/// carry. The carry never exceeds half a minor unit either way, so over any number of checkpoints the sum
/// charged differs from the exact sum by at most half a cent.
pub fn charge_with_carry(carry_micro: i64, micro: i128) -> (i64, i64) {
    let (minor, rest) = round_half_even(i128::from(carry_micro) + micro);
    (to_minor(minor), rest as i64)
}

/// `amount × basis_points / 10 000`, rounded half to even (used for debt recovery as a share of a top-up).
pub fn share_of(amount: i64, basis_points: u32) -> i64 {
    let micro = i128::from(amount) * i128::from(basis_points) * (MICRO_PER_MINOR / 10_000);
    to_minor(round_half_even(micro).0)
}

/// Formats minor units as a decimal amount with two decimals (`-12.05`), for people.
pub fn format_minor(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_even_rounding_worked_numbers() {
        // 2.5 cents → 2, 3.5 → 4, 2.500001 → 3, -2.5 → -2, 1.4999 → 1
        assert_eq!(round_half_even(2_500_000), (2, 500_000));
        assert_eq!(round_half_even(3_500_000), (4, -500_000));
        assert_eq!(round_half_even(2_500_001), (3, -499_999));
        assert_eq!(round_half_even(-2_500_000), (-2, -500_000));
        assert_eq!(round_half_even(1_499_900), (1, 499_900));
    }

    #[test]
    fn carry_loses_nothing_over_a_year_of_small_checkpoints() {
        // 96 readings a day of 37 Wh at 23.45 c/kWh: 0.86765 cents each. Rounding each alone would charge
        // 1 cent per reading (35 040 cents a year); the exact year is 30 402.456 cents.
        let micro_each: i128 = 37 * 23_450;
        let mut carry = 0;
        let mut charged = 0i64;
        for _ in 0..35_040 {
            let (c, rest) = charge_with_carry(carry, micro_each);
            charged += c;
            carry = rest;
        }
        let exact = micro_each * 35_040;
        assert_eq!(exact, 30_402_456_000);
        assert_eq!(charged, 30_402);
        assert_eq!(
            i128::from(charged) * MICRO_PER_MINOR + i128::from(carry),
            exact
        );
        assert!(carry.abs() <= 500_000);
    }

    #[test]
    fn share_of_top_up_rounds_half_even() {
        // 25 % of 10.00 = 2.50; 12.5 % of 0.25 = 0.03125 → 0.03; 33.33 % of 0.15 = 0.049995 → 0.05
        assert_eq!(share_of(1_000, 2_500), 250);
        assert_eq!(share_of(25, 1_250), 3);
        assert_eq!(share_of(15, 3_333), 5);
        assert_eq!(share_of(2, 2_500), 0); // 0.5 cent → 0 (even)
        assert_eq!(share_of(6, 2_500), 2); // 1.5 cents → 2 (even)
    }

    #[test]
    fn formats_amounts() {
        assert_eq!(format_minor(1_205), "12.05");
        assert_eq!(format_minor(-5), "-0.05");
        assert_eq!(format_minor(i64::MIN), "-92233720368547758.08");
    }
}
