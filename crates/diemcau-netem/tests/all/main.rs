//! The link emulator's integration tests in one test binary: the link model in virtual time, timelines and the UDP
//! relay on loopback.

mod link_model;
mod relay_loopback;
mod timeline;
