//! `messenger-handover demo`: the real service against the emulator, with a transcript.

use std::process::ExitCode;

pub async fn main(_serve: bool) -> ExitCode {
    eprintln!("demo: not built yet");
    ExitCode::FAILURE
}
