//! The end-to-end suite in one test binary (one link instead of one per file): headless Chromium pages, the
//! webrtc-rs interop site, bad input, renegotiation and the drill report.

mod bad_input;
mod drill_report;
mod e2e_check;
mod e2e_chromium;
mod e2e_convene;
mod e2e_dynacast;
mod e2e_layers;
mod e2e_low_profile;
mod e2e_reconnect;
mod e2e_rollcall;
mod e2e_video_fec;
mod interop_webrtc_rs;
mod link_drop;
mod renegotiation;
mod rollcall_drill;
