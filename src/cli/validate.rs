//! `rotor validate`: every error with file:line:column and field path.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Output;
use crate::policy;

pub(super) fn validate(paths: &[PathBuf], output: Output) -> anyhow::Result<ExitCode> {
    match policy::load_paths(paths) {
        Ok(set) => {
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({ "valid": true, "policies": set.len() })
                ),
                Output::Text => println!("{} policies valid", set.len()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({ "valid": false, "errors": errors.0 })
                ),
                Output::Text => {
                    for e in &errors.0 {
                        println!("{e}");
                    }
                    println!("{} error(s)", errors.0.len());
                }
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
