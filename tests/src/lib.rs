//! e2e helpers

pub mod relay;
pub mod webrtc_site;
pub mod browser;
