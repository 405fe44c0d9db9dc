//! `messenger-handover doctor`: checks a real setup and explains how to fix each problem.

use std::process::ExitCode;

use crate::config::RawSettings;

pub async fn main(_raw: &RawSettings, _fix: bool) -> ExitCode {
    eprintln!("doctor: not built yet");
    ExitCode::FAILURE
}
