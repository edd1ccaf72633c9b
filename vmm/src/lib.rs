//! Conduit's VMM: VM lifecycle, vCPUs, CLI and API.

pub mod cli;
