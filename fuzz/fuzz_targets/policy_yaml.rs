//! Fuzzes the policy loader (YAML text of one policy file) through [`rotor::fuzzing::policy_yaml`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rotor::fuzzing::policy_yaml(data);
});
