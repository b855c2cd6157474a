//! The binary's integration tests in one test binary: the command line and TLS.

mod cli;
mod tls;
