//! qbo-pipeline.
