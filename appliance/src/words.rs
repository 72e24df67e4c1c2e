//! Small helpers for the words people read: counts with their noun in the right number.

/// `n` and the noun for it: `count(1, "meter", "meters")` is "1 meter", `count(3, …)` "3 meters".
pub fn count<N>(n: N, one: &str, many: &str) -> String
where
    N: std::fmt::Display + PartialEq + From<u8>,
{
    let noun = if n == N::from(1) { one } else { many };
    format!("{n} {noun}")
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(1u32, "meter", "meters"), "1 meter");
        assert_eq!(count(0usize, "meter", "meters"), "0 meters");
        assert_eq!(count(2u64, "interval", "intervals"), "2 intervals");
    }
}
