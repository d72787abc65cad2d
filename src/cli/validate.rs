//! `rotor validate`: every error with file:line:column and field path; `rotor crd`:
//! the RotationPolicy CustomResourceDefinition.

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

/// `rotor crd`: the CustomResourceDefinition the chart installs.
pub(super) fn crd(output: Output) -> anyhow::Result<ExitCode> {
    match output {
        Output::Text => print!("{}", policy::resource::crd_yaml()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&policy::resource::crd())?
        ),
    }
    Ok(ExitCode::SUCCESS)
}
