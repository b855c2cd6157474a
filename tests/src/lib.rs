//! e2e helpers

pub mod browser;
pub mod relay;
pub mod webrtc_site;
