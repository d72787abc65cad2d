//! Fuzzes the `--auth-config` loader through [`rotor::fuzzing::auth_config`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rotor::fuzzing::auth_config(data);
});
