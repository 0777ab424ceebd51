//! The stop request shared by everything a process runs: [`StopSignal`], defined in
//! `qbo_client::stop` (the client's waits race it) and re-exported here so the pipeline's
//! paths keep working.

pub use qbo_client::StopSignal;
