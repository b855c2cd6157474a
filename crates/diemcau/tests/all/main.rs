//! The binary's integration tests in one test binary: the command line, the link check and TLS.

mod check_link;
mod cli;
mod tls;
