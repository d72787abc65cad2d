//! Fuzzes the API's JSON request bodies through [`rotor::fuzzing::api_body`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rotor::fuzzing::api_body(data);
});
