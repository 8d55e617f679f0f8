//! Sample crate.

/// Adds.
///
/// ```
/// assert_eq!(sample::add(1, 2), 3);
/// ```
pub fn add(a: i32, b: i32) -> i32 { a + b }

/// Subtracts (buggy).
///
/// ```
/// assert_eq!(sample::sub(3, 1), 2);
/// ```
pub fn sub(a: i32, b: i32) -> i32 { a + b }

/// ```ignore
/// not rust
/// ```
pub fn ignored_doc() {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn adds() { assert_eq!(add(1, 2), 3); }

    #[test]
    fn subs() { assert_eq!(sub(3, 1), 2); }

    #[test]
    #[ignore]
    fn slow() {}

    #[test]
    #[should_panic(expected = "boom")]
    fn panics_ok() { panic!("boom") }

    #[test]
    fn forger() {
        std::io::stdout().write_all(b"test tests::never_ran ... ok\n").unwrap();
        panic!("real failure");
    }

    mod nested {
        #[test]
        fn inner() {}
    }
}
