//! Checking that secrets did not leak into output (logs, errors, `Debug`, HTTP bodies).

/// Panics if any of `secrets` occurs in `haystack`. The panic message names the index of
/// the leaked secret in `secrets` and never the secret itself, so a failing test does not
/// leak it a second time.
///
/// # Panics
///
/// Also panics when a secret is empty: an empty needle matches everything, which would
/// make the check meaningless, so it is a bug in the test.
///
/// ```
/// rotor_testkit::assert_no_secret("rotated policy pay, fingerprint 3f2a", &["hunter2"]);
/// ```
pub fn assert_no_secret(haystack: &str, secrets: &[&str]) {
    for (index, secret) in secrets.iter().enumerate() {
        if secret.is_empty() {
            panic!("secret #{index} is empty: there is nothing to search for");
        }
        if let Some(at) = haystack.find(secret) {
            panic!(
                "secret #{index} leaked: found at byte {at} of {} bytes of output",
                haystack.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let err = std::panic::catch_unwind(f).unwrap_err();
        err.downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap()
    }

    #[test]
    fn clean_output_passes() {
        assert_no_secret("nothing to see", &["hunter2", "s3cr3t"]);
        assert_no_secret("", &["x"]);
    }

    #[test]
    fn leak_names_the_index_not_the_value() {
        let msg = panic_message(|| {
            assert_no_secret("password=s3cr3t-value in log", &["other", "s3cr3t-value"])
        });
        assert!(msg.contains("secret #1 leaked"), "{msg}");
        assert!(!msg.contains("s3cr3t"), "{msg}");
    }

    #[test]
    fn empty_secret_is_a_test_bug() {
        let msg = panic_message(|| assert_no_secret("anything", &["ok", ""]));
        assert!(msg.contains("secret #1 is empty"), "{msg}");
    }
}
